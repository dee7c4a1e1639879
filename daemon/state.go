package daemon

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// stateVersion is bumped when the state file's meaning changes; a file of
// another version is set aside rather than guessed at.
const stateVersion = 1

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
	Until  time.Time  `json:"until"`
	// Ports, when set, are the only ports of the door the grant covers
	// (an SPA grant); absent means all of them.
	Ports []string `json:"ports,omitempty"`
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

// saveState writes the grants atomically: a temporary file in the same
// directory, synced, then renamed over the old one, so a crash at any
// moment leaves either the old file or the new one, never half of one.
func saveState(path string, st state, now time.Time) error {
	doc := stateDoc{Version: stateVersion, Saved: now.Round(0), Grants: make([]stateGrant, 0, len(st.grants))}
	for _, g := range st.grants {
		sg := stateGrant{Door: g.Door, Source: g.Source, Opened: g.Opened.Round(0), Until: g.Until.Round(0), Origin: st.origin[grantID{g.Door, g.Source}]}
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
		return fmt.Errorf("failed to encode state: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("failed to create state directory %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("failed to write state file %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("failed to write state file %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("failed to sync state file %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("failed to write state file %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("failed to replace state file %s: %w", path, err)
	}
	// The rename itself is durable only once the directory is synced.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// errCorruptState marks a state file that could not be read as one; the
// caller sets it aside and starts without grants, which fails closed.
var errCorruptState = errors.New("corrupt state file")

// loadState reads the saved grants. A missing file is no error: there is
// simply nothing to restore.
func loadState(path string) (state, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return state{}, nil
	}
	if err != nil {
		return state{}, fmt.Errorf("failed to read state file %s: %w", path, err)
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return state{}, fmt.Errorf("%w %s: %w", errCorruptState, path, err)
	}
	if doc.Version != stateVersion {
		return state{}, fmt.Errorf("%w %s: version %d, want %d", errCorruptState, path, doc.Version, stateVersion)
	}
	var st state
	for i, g := range doc.Grants {
		if g.Door == "" || !g.Source.IsValid() || g.Until.IsZero() {
			return state{}, fmt.Errorf("%w %s: grant %d is incomplete", errCorruptState, path, i)
		}
		vg := verdict.Grant{Door: g.Door, Source: g.Source, Opened: g.Opened, Until: g.Until}
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
// post-mortem instead of overwriting it.
func setAside(path string, now time.Time) (string, error) {
	to := fmt.Sprintf("%s.corrupt-%s", path, now.UTC().Format("20060102T150405Z"))
	if err := os.Rename(path, to); err != nil {
		return "", fmt.Errorf("failed to set aside state file %s: %w", path, err)
	}
	return to, nil
}

// save writes the grants and the SPA replay cache to the state file.
func (d *Daemon) save() {
	path := d.gen.Load().pol.StateFile
	if path == "" {
		return
	}
	now := time.Now()
	if err := saveState(path, state{d.eng.Grants(now), d.eng.ReplayEntries(now), d.grantOrigins(now)}, now); err != nil {
		d.log.Error("failed to save grants; they will not survive a restart", "err", err)
	}
}

// restore brings back the grants of an earlier run. A state file that
// cannot be read is set aside and the daemon starts without grants: a lost
// grant means a knock again, a wrongly restored one an open door.
func (d *Daemon) restore(now time.Time) {
	path := d.gen.Load().pol.StateFile
	if path == "" {
		return
	}
	saved, err := loadState(path)
	if err != nil {
		attrs := []any{"err", err}
		if errors.Is(err, errCorruptState) {
			if to, serr := setAside(path, now); serr == nil {
				attrs = append(attrs, "moved_to", to)
			} else {
				attrs = append(attrs, "set_aside_err", serr)
			}
		}
		d.log.Error("state file unusable; starting with no grants", attrs...)
		return
	}
	restored, skipped := d.eng.Restore(saved.grants, now)
	replay, err := d.eng.RestoreReplay(saved.replay, now)
	if err != nil {
		d.log.Warn("not every used SPA packet fits the replay cache", "err", err, "restored", replay)
	}
	d.log.Info("grants restored", "state_file", path, "restored", restored, "skipped", skipped, "spa_replay", replay)
}
