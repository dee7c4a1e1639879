package daemon

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/knockgate/knockgate/internal/atomicfile"
	"github.com/knockgate/knockgate/verdict"
)

// stateVersion is bumped when the state file's meaning changes. A file of
// a later version is set aside rather than guessed at; an earlier one is
// read by the rules of its version:
//   - 1 has no conns_left: its grants come back with the door's
//     max_connections (Engine.Restore's rule for a saved 0), never unlimited.
//   - 2 adds conns_left, the connections a max_connections grant still
//     admits (absent or 0: its door had no limit).
const stateVersion = 2

// stateDoc is the state file: the grants that must survive a restart,
// crash included. Times are wall-clock, the only clock that means anything
// across processes.
type stateDoc struct {
	Version int          `json:"version"`
	Saved   time.Time    `json:"saved"`
	Grants  []stateGrant `json:"grants"`
	// Replay holds the SPA packets already used, so that one captured
	// before a restart cannot be replayed after it.
	Replay []stateReplay `json:"replay,omitempty"`
}

type stateGrant struct {
	Door   string     `json:"door"`
	Source netip.Addr `json:"source"`
	Opened time.Time  `json:"opened"`
	// Until is the expiry granted, which an SPA client's timeout may have
	// made longer or shorter than the door's open_for.
	Until time.Time `json:"until"`
	// Ports, when set, are the only ports of the door the grant covers
	// (an SPA grant); absent means all of them.
	Ports     []string `json:"ports,omitempty"`
	ConnsLeft int      `json:"conns_left,omitempty"`
	// Origin is the cluster gateway the grant was made on; absent
	// without a cluster.
	Origin string `json:"origin,omitempty"`
}

type stateReplay struct {
	Key   string    `json:"key"` // hex of the first 20 bytes of the packet's SHA-256
	Until time.Time `json:"until"`
}

// state is what the daemon saves and restores.
type state struct {
	grants []verdict.Grant
	replay []verdict.ReplayEntry
	origin map[grantID]string // each grant's cluster gateway, if known
}

// encodeState is the state file's contents for st.
func encodeState(st state, now time.Time) ([]byte, error) {
	doc := stateDoc{Version: stateVersion, Saved: now.Round(0), Grants: make([]stateGrant, 0, len(st.grants))}
	for _, g := range st.grants {
		sg := stateGrant{Door: g.Door, Source: g.Source, Opened: g.Opened.Round(0), Until: g.Until.Round(0), ConnsLeft: g.ConnsLeft,
			Origin: st.origin[grantID{g.Door, g.Source}]}
		for _, p := range g.Ports {
			sg.Ports = append(sg.Ports, p.String())
		}
		doc.Grants = append(doc.Grants, sg)
	}
	for _, r := range st.replay {
		doc.Replay = append(doc.Replay, stateReplay{Key: hex.EncodeToString(r.Key[:]), Until: r.Until.Round(0)})
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("failed to encode state: %w", err)
	}
	return append(b, '\n'), nil
}

// saveState writes the grants atomically (atomicfile.Write: a crash at any
// moment leaves either the old file or the new one, and a symlink at path
// is replaced, never written through), unless path is no place for them
// (checkStatePath).
func saveState(path string, st state, now time.Time, protected []string) error {
	if err := checkStatePath(path, protected); err != nil {
		return err
	}
	b, err := encodeState(st, now)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("failed to save state file: %w", err)
	}
	return nil
}

// errCorruptState marks a state file that could not be read as one; the
// caller sets it aside and starts without grants, which fails closed.
var errCorruptState = errors.New("corrupt state file")

// errStatePath marks a state path the daemon must neither read nor
// write: not a regular file, or a file the policy names. It is refused at
// start, before any queue is bound, and never set aside.
var errStatePath = errors.New("unusable state file path")

// checkStatePath refuses a path that is something other than a regular
// file (a FIFO would hang the reader, a directory fail every save, a
// device be written to) or that is one of the files protected lists (the
// policy, its keys and secret files): the daemon never renames or replaces
// those. A symlink is allowed: the writer replaces it and the reader
// checks what it points to. A missing path is fine.
func checkStatePath(path string, protected []string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("failed to check state file %s: %w", path, err)
	}
	fi, err := os.Lstat(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to check state file %s: %w", path, err)
	}
	if fi != nil {
		if t := fi.Mode().Type(); t != 0 && t != fs.ModeSymlink {
			return fmt.Errorf("%w: %s is %s, not a regular file; remove it or choose another state_file", errStatePath, path, fileKind(t))
		}
	}
	for _, f := range protected {
		same := abs == f
		if !same && fi != nil {
			// Lstat: a hard link, or the same name reached through a
			// symlinked directory, is the file itself; a symlink at path
			// is not, since it is what would be replaced or renamed.
			pi, err := os.Stat(f)
			same = err == nil && os.SameFile(fi, pi)
		}
		if same {
			return fmt.Errorf("%w: %s is %s, which the policy names (policy, keys_file or secret_file): the daemon never renames or overwrites it; choose another state_file",
				errStatePath, path, f)
		}
	}
	return nil
}

// fileKind names a file type for an error message.
func fileKind(t fs.FileMode) string {
	switch {
	case t&fs.ModeDir != 0:
		return "a directory"
	case t&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case t&fs.ModeSocket != 0:
		return "a socket"
	case t&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file (" + t.String() + ")"
}

// loadState reads the saved grants. A missing file is no error: there is
// simply nothing to restore. A symlink is followed, as it always was, but
// what it points to must be a regular file too: the file is opened without
// blocking (a FIFO would otherwise hang the open until a writer came) and
// checked once open, so nothing can be swapped in between.
func loadState(path string) (state, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return state{}, nil
	}
	if err != nil {
		return state{}, fmt.Errorf("failed to read state file %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return state{}, fmt.Errorf("failed to read state file %s: %w", path, err)
	}
	if t := fi.Mode().Type(); t != 0 {
		return state{}, fmt.Errorf("%w: %s leads to %s, not a regular file; remove it or choose another state_file", errStatePath, path, fileKind(t))
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return state{}, fmt.Errorf("failed to read state file %s: %w", path, err)
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return state{}, fmt.Errorf("%w %s: %w", errCorruptState, path, err)
	}
	if doc.Version < 1 || doc.Version > stateVersion {
		return state{}, fmt.Errorf("%w %s: version %d, want 1 to %d", errCorruptState, path, doc.Version, stateVersion)
	}
	var st state
	for i, g := range doc.Grants {
		if g.Door == "" || !g.Source.IsValid() || g.Until.IsZero() {
			return state{}, fmt.Errorf("%w %s: grant %d is incomplete", errCorruptState, path, i)
		}
		if g.ConnsLeft < 0 {
			return state{}, fmt.Errorf("%w %s: grant %d has %d connections left", errCorruptState, path, i, g.ConnsLeft)
		}
		// Version 1 saved no count: ConnsLeft stays 0, which Restore turns
		// into the door's max_connections.
		vg := verdict.Grant{Door: g.Door, Source: g.Source, Opened: g.Opened, Until: g.Until, ConnsLeft: g.ConnsLeft}
		for _, ps := range g.Ports {
			p, err := verdict.ParsePort(ps)
			if err != nil {
				return state{}, fmt.Errorf("%w %s: grant %d: %w", errCorruptState, path, i, err)
			}
			vg.Ports = append(vg.Ports, p)
		}
		if g.Ports != nil && len(vg.Ports) == 0 {
			return state{}, fmt.Errorf("%w %s: grant %d covers no port", errCorruptState, path, i)
		}
		st.grants = append(st.grants, vg)
		if g.Origin != "" {
			if st.origin == nil {
				st.origin = map[grantID]string{}
			}
			st.origin[grantID{g.Door, g.Source}] = g.Origin
		}
	}
	for i, r := range doc.Replay {
		var e verdict.ReplayEntry
		k, err := hex.DecodeString(r.Key)
		if err != nil || len(k) != len(e.Key) || r.Until.IsZero() {
			return state{}, fmt.Errorf("%w %s: replay entry %d is invalid", errCorruptState, path, i)
		}
		copy(e.Key[:], k)
		e.Until = r.Until
		st.replay = append(st.replay, e)
	}
	return st, nil
}

// setAside renames a state file that could not be used, keeping it for a
// post-mortem instead of overwriting it; never a file the policy names.
func setAside(path string, now time.Time, protected []string) (string, error) {
	if err := checkStatePath(path, protected); err != nil {
		return "", fmt.Errorf("failed to set aside state file %s: %w", path, err)
	}
	to := fmt.Sprintf("%s.corrupt-%s", path, now.UTC().Format("20060102T150405Z"))
	if err := os.Rename(path, to); err != nil {
		return "", fmt.Errorf("failed to set aside state file %s: %w", path, err)
	}
	return to, nil
}
