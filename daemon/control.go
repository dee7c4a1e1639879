package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// The control protocol is one JSON request line and one JSON response line
// per connection: simple enough to drive with socat in an emergency.

// Request is what a client asks of the daemon.
type Request struct {
	Op     string `json:"op"` // status, revoke, reload
	Door   string `json:"door,omitempty"`
	Source string `json:"source,omitempty"`
}

// Response is the daemon's answer; Error is set when OK is not.
type Response struct {
	OK      bool           `json:"ok"`
	Error   string         `json:"error,omitempty"`
	Revoked bool           `json:"revoked,omitempty"`
	Status  *StatusReport  `json:"status,omitempty"`
	Reload  *ReloadOutcome `json:"reload,omitempty"`
}

// StatusReport is the answer to status (knockgate status --json prints it).
type StatusReport struct {
	Version        string        `json:"version"`
	Policy         string        `json:"policy"`
	Now            time.Time     `json:"now"`
	TrackedSources int           `json:"tracked_sources"`
	MaxSources     int           `json:"max_sources"`
	Grants         int           `json:"grants"`
	MaxGrants      int           `json:"max_grants"`
	Evictions      uint64        `json:"evictions"`
	Doors          []DoorStatus  `json:"doors"`
	Queue          QueueSnapshot `json:"queue"`
	// Cluster is set when the policy has a cluster block.
	Cluster *ClusterStatus `json:"cluster,omitempty"`
}

// DoorStatus lists a door's live grants.
type DoorStatus struct {
	Name   string        `json:"name"`
	Grants []GrantStatus `json:"grants"`
}

// GrantStatus is one live grant.
type GrantStatus struct {
	Source      netip.Addr `json:"source"`
	Opened      time.Time  `json:"opened"`
	Until       time.Time  `json:"until"`
	LeftSeconds float64    `json:"left_seconds"`
	// Origin is the cluster gateway the grant was made on; absent
	// without a cluster.
	Origin string `json:"origin,omitempty"`
}

// QueueSnapshot sums the counters of the queues the daemon serves, Queues
// of them numbered from Queue.
type QueueSnapshot struct {
	Queue     uint16 `json:"queue"`
	Queues    int    `json:"queues"`
	Packets   uint64 `json:"packets"`
	Accepted  uint64 `json:"accepted"`
	Dropped   uint64 `json:"dropped"`
	Malformed uint64 `json:"malformed"`
	ENOBUFS   uint64 `json:"enobufs"`
}

// ReloadOutcome is the answer to reload: the doors of the new policy and
// the grants that ended with their door, as "door source".
type ReloadOutcome struct {
	Doors int      `json:"doors"`
	Ended []string `json:"ended,omitempty"`
}

// Handler is what the control socket serves; *Daemon implements it.
type Handler interface {
	Status() *StatusReport
	Revoke(door string, src netip.Addr) (bool, error)
	Reload(by string) (*ReloadOutcome, error)
}

// ListenControl creates the control socket, readable and writable by the
// daemon's user only. A socket left by a dead daemon is replaced; one that
// a live daemon answers on is not, nor is anything that is not a socket (a
// control_socket set by mistake to the policy's path must not delete it).
func ListenControl(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("failed to create control socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("failed to listen on control socket %s: another knockgate answers there", path)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("failed to listen on control socket %s: a file that is not a socket is in the way", path)
		}
		os.Remove(path)
	}
	// The umask closes the window between bind and chmod in which the
	// socket would carry the default mode.
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("failed to restrict control socket %s: %w", path, err)
	}
	return ln, nil
}

// ServeControl answers requests until ctx is done.
func ServeControl(ctx context.Context, ln *net.UnixListener, h Handler, log *slog.Logger) {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("control socket accept failed", "err", err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return
		}
		go handleControl(c, h, log)
	}
}

func handleControl(c *net.UnixConn, h Handler, log *slog.Logger) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// The request is read before the caller is checked, so that a refused
	// caller has sent it and reads the reason, rather than writing into a
	// socket already closed (EPIPE).
	line, err := bufio.NewReader(io.LimitReader(c, 64<<10)).ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return
	}
	// The file mode already keeps others out; the peer's credentials are
	// checked too, so a socket exposed by a careless bind mount or chmod
	// still answers only root and the daemon's own user.
	uid, err := peerUID(c)
	if err != nil {
		log.Warn("control connection refused: its credentials could not be read", "err", err)
		return
	}
	if uid != 0 && uid != uint32(os.Getuid()) {
		log.Warn("control connection refused", "uid", uid)
		json.NewEncoder(c).Encode(Response{Error: "permission denied: only root may control knockgate"})
		return
	}
	var req Request
	resp := Response{}
	if err := json.Unmarshal(line, &req); err != nil {
		resp.Error = fmt.Sprintf("invalid request: %v", err)
	} else {
		resp = dispatch(req, h)
	}
	json.NewEncoder(c).Encode(resp)
}

func dispatch(req Request, h Handler) Response {
	switch req.Op {
	case "status":
		return Response{OK: true, Status: h.Status()}
	case "revoke":
		src, err := netip.ParseAddr(req.Source)
		if err != nil {
			return Response{Error: fmt.Sprintf("invalid source %q: %v", req.Source, err)}
		}
		live, err := h.Revoke(req.Door, src)
		if err != nil {
			return Response{Error: err.Error()}
		}
		return Response{OK: true, Revoked: live}
	case "reload":
		out, err := h.Reload("control socket")
		if err != nil {
			return Response{Error: err.Error()}
		}
		return Response{OK: true, Reload: out}
	}
	return Response{Error: fmt.Sprintf("unknown op %q", req.Op)}
}

func peerUID(c *net.UnixConn) (uint32, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}
