package verdict

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// replayUntil is the SPA replay cache's bound, decided here only. An
// authenticated packet is remembered until its timestamp could no longer
// pass the door's max_age (fwknop.Message.CheckAge accepts it that far
// either side of now, in whole seconds: up to the end of the second
// max_age after it): after that the age check refuses it anyway, so
// remembering it longer would buy nothing. The cache thus holds at most
// the packets of one max_age window, rate × window; Policy.MaxReplay caps
// even that, against a flood of valid packets from key holders, by
// evicting the entry nearest its end (remember).
func replayUntil(sent time.Time, maxAge time.Duration) time.Time {
	return time.Unix(sent.Unix()+int64(maxAge/time.Second)+1, 0)
}

// replayKey is the replay cache's key for a packet: the first 20 bytes of
// its SHA-256, the last four of them in the door field.
func replayKey(sum []byte) key {
	return key{
		hi:   binary.BigEndian.Uint64(sum[0:8]),
		lo:   binary.BigEndian.Uint64(sum[8:16]),
		door: binary.BigEndian.Uint32(sum[16:20]),
	}
}

// digest is the inverse of replayKey: the 20 bytes of SHA-256 k holds.
func (k key) digest() (d [20]byte) {
	binary.BigEndian.PutUint64(d[0:8], k.hi)
	binary.BigEndian.PutUint64(d[8:16], k.lo)
	binary.BigEndian.PutUint32(d[16:20], k.door)
	return d
}

// used reports whether the packet k was used and could still pass its age
// check at t.
func (r *replayShard) used(k key, t int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	until := r.t.get(k)
	return until != nil && *until > t
}

// claim marks the packet k used until then, unless it already is at t:
// then it reports false, and the packet is a replay.
func (r *replayShard) claim(k key, t, until int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v := r.t.get(k); v != nil && *v > t {
		return false
	}
	r.remember(k, until)
	return true
}

// remember marks the packet k used until then. r.mu is held.
func (r *replayShard) remember(k key, until int64) {
	tb := &r.t
	if v := tb.get(k); v != nil {
		*v = max(*v, until)
		return
	}
	if tb.full() {
		// Forget the packet closest to unusable anyway. Only packets that
		// authenticated get here, so only key holders can fill the cache.
		// The start of the sample needs no secret: an attacker cannot
		// choose digests.
		tb.evict(uint64(until)^k.hi, func(until *int64) uint64 { return since(*until) })
		r.evictions++
	}
	*tb.insert(k) = until
}

// ReplayEntry is a remembered SPA packet, for the state file.
type ReplayEntry struct {
	// Key is the first 20 bytes of the packet's SHA-256.
	Key   [20]byte
	Until time.Time
}

// ReplayEntries returns the remembered SPA packets that are still live.
func (e *Engine) ReplayEntries(now time.Time) []ReplayEntry {
	t := e.nanos(now)
	e.ctl.Lock()
	defer e.ctl.Unlock()
	var out []ReplayEntry
	e.eachReplay(func(r *replayShard) { out = r.appendLive(out, e.epoch, t) })
	return out
}

// appendLive appends the entries live at t to out. r.mu is held.
func (r *replayShard) appendLive(out []ReplayEntry, epoch time.Time, t int64) []ReplayEntry {
	for i := range r.t.slots {
		s := &r.t.slots[i]
		if !s.used || s.v <= t {
			continue
		}
		out = append(out, ReplayEntry{Key: s.k.digest(), Until: epoch.Add(time.Duration(s.v))})
	}
	return out
}

// errReplayFull is returned when saved entries do not fit the cache.
var errReplayFull = errors.New("replay cache full")

// RestoreReplay re-creates remembered SPA packets saved by an earlier run,
// so a packet captured before a restart cannot be replayed after it. It
// restores what fits and reports how many; an error says some did not
// (the cache is sharded by digest, so one share can fill while another
// has room).
func (e *Engine) RestoreReplay(rs []ReplayEntry, now time.Time) (int, error) {
	t := e.nanos(now)
	e.ctl.Lock()
	defer e.ctl.Unlock()
	g := e.gen.Load()
	n, lost := 0, 0
	for _, r := range rs {
		left := r.Until.Sub(now)
		if left <= 0 {
			continue
		}
		k := replayKey(r.Key[:])
		sh := g.replayOf(k)
		sh.mu.Lock()
		if sh.t.get(k) == nil && sh.t.full() {
			lost++
		} else {
			sh.remember(k, addSat(t, int64(left)))
			n++
		}
		sh.mu.Unlock()
	}
	if lost > 0 {
		return n, fmt.Errorf("%d of %d entries left out: %w", lost, lost+n, errReplayFull)
	}
	return n, nil
}
