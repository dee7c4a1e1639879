package daemon

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// stateWriter is the daemon's side of its state file: the lock it holds
// on it, what the file on disk grants, and how saves fare.
type stateWriter struct {
	mu   sync.Mutex // one save, restore or switch of file at a time
	lock *stateLock
	// onDisk is what the file on disk grants, by door and source, as of
	// the last save that succeeded (or the restore); unknown is set when
	// the daemon cannot tell (a reload named another file).
	onDisk  map[grantKey]diskGrant
	unknown bool

	failures atomic.Uint64
	lastErr  atomic.Pointer[string] // nil once a save succeeded
}

type grantKey struct {
	door string
	src  netip.Addr
}

type diskGrant struct {
	until time.Time
	left  int // 0: no limit, or a file that did not say
}

func diskGrants(gs []verdict.Grant) map[grantKey]diskGrant {
	m := make(map[grantKey]diskGrant, len(gs))
	for _, g := range gs {
		m[grantKey{g.Door, g.Source}] = diskGrant{until: g.Until, left: g.ConnsLeft}
	}
	return m
}

// wider reports whether the file on disk would restore more than the
// grants live now: a grant since revoked, closed, ended by a reload, used
// up or shortened, or more connections than are left. Expired grants do
// not count: Restore skips them.
func (w *stateWriter) wider(live []verdict.Grant, now time.Time) bool {
	if w.unknown {
		return true
	}
	cur := diskGrants(live)
	for k, dg := range w.onDisk {
		if !dg.until.After(now) {
			continue
		}
		g, ok := cur[k]
		switch {
		case !ok, g.until.Before(dg.until):
			return true
		case g.left > 0 && (dg.left == 0 || dg.left > g.left):
			// A saved 0 comes back as the door's max_connections.
			return true
		}
	}
	return false
}

// save writes the grants and the SPA replay cache to the state file. A
// save that fails is counted, and status and readiness say so until one
// succeeds. If the file left on disk would then bring back a grant that
// has since ended or shrunk (a revoke on a full disk), it is removed,
// which needs no space: a lost grant means a knock again, a resurrected
// one an open door.
func (d *Daemon) save() {
	w := &d.state
	w.mu.Lock()
	defer w.mu.Unlock()
	pol := d.gen.Load().pol
	path := pol.StateFile
	if path == "" {
		return
	}
	now := time.Now()
	live := d.eng.Grants(now)
	err := saveState(path, state{live, d.eng.ReplayEntries(now), d.grantOrigins(now)}, now, pol.ProtectedFiles())
	d.m.StateSaved(err)
	if err == nil {
		w.onDisk, w.unknown = diskGrants(live), false
		w.lastErr.Store(nil)
		return
	}
	n := w.failures.Add(1)
	msg := err.Error()
	w.lastErr.Store(&msg)
	attrs := []any{"err", err, "state_file", path, "failures", n}
	// A path refused as a policy file, a directory or the like is never
	// removed.
	if errors.Is(err, errStatePath) || !w.wider(live, now) {
		d.log.Error("failed to save grants; they will not survive a restart", attrs...)
		return
	}
	if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		d.log.Error("failed to save grants, and to remove the state file, which would bring back grants since ended at a restart", append(attrs, "remove_err", rerr)...)
		return
	}
	w.onDisk, w.unknown = nil, false
	d.log.Error("failed to save grants; removed the state file, which would have brought back grants since ended: a restart now starts with no grants and no SPA replay cache", attrs...)
}

// saveFailing says why the last save failed, or "" if it did not.
func (d *Daemon) saveFailing() string {
	if p := d.state.lastErr.Load(); p != nil {
		return *p
	}
	return ""
}

// restore locks the state file and brings back the grants of an earlier
// run. A path that is no regular file, or one the policy names as policy,
// keys or secret file, or a state file another daemon holds, is an error:
// the daemon refuses to start. A state file that cannot be read is set
// aside and the daemon starts without grants: a lost grant means a knock
// again, a wrongly restored one an open door.
func (d *Daemon) restore(now time.Time) error {
	w := &d.state
	w.mu.Lock()
	defer w.mu.Unlock()
	pol := d.gen.Load().pol
	path := pol.StateFile
	if path == "" {
		return nil
	}
	protected := pol.ProtectedFiles()
	if err := checkStatePath(path, protected); err != nil {
		return err
	}
	lock, err := lockState(path, protected)
	if err != nil {
		return err
	}
	w.lock = lock
	saved, err := loadState(path)
	if errors.Is(err, errStatePath) {
		return err
	}
	if err != nil {
		attrs := []any{"err", err}
		if errors.Is(err, errCorruptState) {
			if to, serr := setAside(path, now, protected); serr == nil {
				attrs = append(attrs, "moved_to", to)
			} else {
				attrs = append(attrs, "set_aside_err", serr)
			}
		}
		// What is on disk, if anything, is not known.
		w.unknown = true
		d.log.Error("state file unusable; starting with no grants", attrs...)
		return nil
	}
	w.onDisk = diskGrants(saved.grants)
	restored, skipped := d.eng.Restore(saved.grants, now)
	replay, err := d.eng.RestoreReplay(saved.replay, now)
	if err != nil {
		d.log.Warn("not every used SPA packet fits the replay cache", "err", err, "restored", replay)
	}
	d.log.Info("grants restored", "state_file", path, "restored", restored, "skipped", skipped, "spa_replay", replay)
	return nil
}

// switchState moves the daemon to the state file a reload names: it locks
// the new file first, and refuses (keeping the old one) if it cannot.
func (d *Daemon) switchState(path string, protected []string) error {
	w := &d.state
	w.mu.Lock()
	defer w.mu.Unlock()
	var lock *stateLock
	if path != "" {
		if err := checkStatePath(path, protected); err != nil {
			return err
		}
		l, err := lockState(path, protected)
		if err != nil {
			return err
		}
		lock = l
	}
	w.lock.release()
	w.lock, w.onDisk, w.unknown = lock, nil, true
	return nil
}

// unlockState drops the state file's lock when the daemon stops.
func (d *Daemon) unlockState() {
	w := &d.state
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lock.release()
	w.lock = nil
}
