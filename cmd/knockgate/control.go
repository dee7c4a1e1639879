package main

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
	"sort"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/knockgate/knockgate/rules"
)

// The control protocol is one JSON request line and one JSON response line
// per connection: simple enough to drive with socat in an emergency.
type controlRequest struct {
	Op     string `json:"op"` // status, revoke, reload
	Door   string `json:"door,omitempty"`
	Source string `json:"source,omitempty"`
}

type controlResponse struct {
	OK      bool           `json:"ok"`
	Error   string         `json:"error,omitempty"`
	Revoked bool           `json:"revoked,omitempty"`
	Status  *statusReport  `json:"status,omitempty"`
	Reload  *reloadOutcome `json:"reload,omitempty"`
}

type statusReport struct {
	Version        string        `json:"version"`
	Policy         string        `json:"policy"`
	Now            time.Time     `json:"now"`
	TrackedSources int           `json:"tracked_sources"`
	MaxSources     int           `json:"max_sources"`
	Grants         int           `json:"grants"`
	MaxGrants      int           `json:"max_grants"`
	Evictions      uint64        `json:"evictions"`
	Doors          []doorStatus  `json:"doors"`
	Queue          queueSnapshot `json:"queue"`
}

type doorStatus struct {
	Name   string        `json:"name"`
	Grants []grantStatus `json:"grants"`
}

type grantStatus struct {
	Source      netip.Addr `json:"source"`
	Opened      time.Time  `json:"opened"`
	Until       time.Time  `json:"until"`
	LeftSeconds float64    `json:"left_seconds"`
}

// queueSnapshot sums the counters of the queues the daemon serves, Queues
// of them numbered from Queue.
type queueSnapshot struct {
	Queue     uint16 `json:"queue"`
	Queues    int    `json:"queues"`
	Packets   uint64 `json:"packets"`
	Accepted  uint64 `json:"accepted"`
	Dropped   uint64 `json:"dropped"`
	Malformed uint64 `json:"malformed"`
	ENOBUFS   uint64 `json:"enobufs"`
}

type reloadOutcome struct {
	Doors int      `json:"doors"`
	Ended []string `json:"ended,omitempty"`
}

// controlHandler is what the socket serves; the daemon implements it.
type controlHandler interface {
	status() *statusReport
	revoke(door string, src netip.Addr) (bool, error)
	reload(by string) (*reloadOutcome, error)
}

// listenControl creates the control socket, readable and writable by the
// daemon's user only. A socket left by a dead daemon is replaced; one that
// a live daemon answers on is not, nor is anything that is not a socket (a
// control_socket set by mistake to the policy's path must not delete it).
func listenControl(path string) (*net.UnixListener, error) {
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

// serveControl answers requests until ctx is done.
func serveControl(ctx context.Context, ln *net.UnixListener, h controlHandler, log *slog.Logger) {
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

func handleControl(c *net.UnixConn, h controlHandler, log *slog.Logger) {
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
		json.NewEncoder(c).Encode(controlResponse{Error: "permission denied: only root may control knockgate"})
		return
	}
	var req controlRequest
	resp := controlResponse{}
	if err := json.Unmarshal(line, &req); err != nil {
		resp.Error = fmt.Sprintf("invalid request: %v", err)
	} else {
		resp = dispatch(req, h)
	}
	json.NewEncoder(c).Encode(resp)
}

func dispatch(req controlRequest, h controlHandler) controlResponse {
	switch req.Op {
	case "status":
		return controlResponse{OK: true, Status: h.status()}
	case "revoke":
		src, err := netip.ParseAddr(req.Source)
		if err != nil {
			return controlResponse{Error: fmt.Sprintf("invalid source %q: %v", req.Source, err)}
		}
		live, err := h.revoke(req.Door, src)
		if err != nil {
			return controlResponse{Error: err.Error()}
		}
		return controlResponse{OK: true, Revoked: live}
	case "reload":
		out, err := h.reload("control socket")
		if err != nil {
			return controlResponse{Error: err.Error()}
		}
		return controlResponse{OK: true, Reload: out}
	}
	return controlResponse{Error: fmt.Sprintf("unknown op %q", req.Op)}
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

// callControl sends one request to the daemon.
func callControl(path string, req controlRequest) (*controlResponse, error) {
	c, err := net.DialTimeout("unix", path, 3*time.Second)
	if err != nil {
		return nil, fmt.Errorf("failed to reach the daemon at %s (is knockgate running, and are you root?): %w", path, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, fmt.Errorf("failed to send request to %s: %w", path, err)
	}
	var resp controlResponse
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, fmt.Errorf("failed to read the daemon's answer from %s: %w", path, err)
	}
	if !resp.OK {
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", "[--socket PATH] [--json]",
		"Show the running daemon's live grants per door, with source and time\nleft, and how many sources have a knock in progress.", stderr)
	socket := fs.String("socket", rules.DefaultControlSocket, "control socket `path` of the daemon")
	asJSON := fs.Bool("json", false, "print the raw JSON report")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	resp, err := callControl(*socket, controlRequest{Op: "status"})
	if err != nil {
		return err
	}
	st := resp.Status
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	fmt.Fprintf(stdout, "knockgate %s, policy %s, queue %s\n", st.Version, st.Policy, rules.QueueRange(st.Queue.Queue, st.Queue.Queues))
	fmt.Fprintf(stdout, "sources with a knock in progress: %d of %d; grants: %d of %d; evictions: %d\n",
		st.TrackedSources, st.MaxSources, st.Grants, st.MaxGrants, st.Evictions)
	fmt.Fprintf(stdout, "packets: %d (accepted %d, dropped %d, malformed %d)\n\n",
		st.Queue.Packets, st.Queue.Accepted, st.Queue.Dropped, st.Queue.Malformed)
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "DOOR\tSOURCE\tLEFT\tUNTIL")
	for _, d := range st.Doors {
		if len(d.Grants) == 0 {
			fmt.Fprintf(tw, "%s\t-\t\t\n", d.Name)
		}
		for _, g := range d.Grants {
			left := time.Duration(g.LeftSeconds * float64(time.Second)).Round(time.Second)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.Name, g.Source, left, g.Until.Local().Format(time.RFC3339))
		}
	}
	return tw.Flush()
}

func cmdRevoke(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("revoke", "--door NAME --source ADDR [--socket PATH]",
		"End a source's grant for a door at once. New connections from it are\ndropped; connections already open carry on.", stderr)
	door := fs.String("door", "", "door `name`")
	source := fs.String("source", "", "source `address` whose grant to end")
	socket := fs.String("socket", rules.DefaultControlSocket, "control socket `path` of the daemon")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *door == "" || *source == "" {
		fs.Usage()
		return errUsage
	}
	resp, err := callControl(*socket, controlRequest{Op: "revoke", Door: *door, Source: *source})
	if err != nil {
		return err
	}
	if resp.Revoked {
		fmt.Fprintf(stdout, "revoked %s's grant for door %q\n", *source, *door)
	} else {
		fmt.Fprintf(stdout, "%s held no live grant for door %q\n", *source, *door)
	}
	return nil
}

func cmdReload(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("reload", "[--socket PATH]",
		"Make the daemon re-read its policy, as SIGHUP does. Grants and knocks in\n"+
			"progress of doors that still exist are kept. An invalid policy is\n"+
			"refused with its diagnostics and the running policy stays.", stderr)
	socket := fs.String("socket", rules.DefaultControlSocket, "control socket `path` of the daemon")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	resp, err := callControl(*socket, controlRequest{Op: "reload"})
	if err != nil {
		return fmt.Errorf("reload refused, the running policy stays:\n%w", err)
	}
	ended := resp.Reload.Ended
	sort.Strings(ended)
	fmt.Fprintf(stdout, "reloaded: %d door(s)", resp.Reload.Doors)
	if len(ended) > 0 {
		fmt.Fprintf(stdout, "; grants ended with their doors: %v", ended)
	}
	fmt.Fprintln(stdout)
	return nil
}
