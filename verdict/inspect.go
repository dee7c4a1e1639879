package verdict

import (
	"net/netip"
	"time"
)

// What an operator asks of the engine beside Grants and Stats: one grant
// (for the log line of a grant just opened), the penalty box, the knocks
// in progress, and lifting a ban. Each locks e.ctl and the shards in turn,
// as Grants does; none is on the per-packet path.

// Ban is a source in the penalty box, banned until Until.
type Ban struct {
	Source netip.Addr
	Until  time.Time
}

// Progress is a source's knock sequence in progress: Step knocks of Of
// (Of is 0 for a TOTP sequence, whose knocks change every step) matched
// since Started, for Door.
type Progress struct {
	Door    string
	Source  netip.Addr
	Close   bool // the door's close_sequence
	Step    int
	Of      int
	Started time.Time
}

// GrantOf returns source's live grant for door, with its actual ports and
// expiry (an SPA grant covers what its packet asked for, for as long as
// it asked).
func (e *Engine) GrantOf(door string, source netip.Addr, now time.Time) (Grant, bool) {
	t := e.nanos(now)
	e.ctl.Lock()
	defer e.ctl.Unlock()
	g := e.gen.Load()
	di, ok := g.c.doorIndex[door]
	if !ok {
		return Grant{}, false
	}
	k := keyOf(source.Unmap(), di)
	s := g.shardOf(k.source())
	s.mu.Lock()
	defer s.mu.Unlock()
	gr := s.grants.get(k)
	if gr == nil || gr.until <= t {
		return Grant{}, false
	}
	return e.grantOf(g.c, k, gr), true
}

// Bans returns the sources banned at now.
func (e *Engine) Bans(now time.Time) []Ban {
	t := e.nanos(now)
	e.ctl.Lock()
	defer e.ctl.Unlock()
	out := []Ban{}
	e.eachShard(func(c *compiled, s *shard) {
		for i := range s.penalty.slots {
			sl := &s.penalty.slots[i]
			if sl.used && sl.v.until > t {
				out = append(out, Ban{Source: sl.k.addr(), Until: e.epoch.Add(time.Duration(sl.v.until))})
			}
		}
	})
	return out
}

// Progress returns the knock sequences in progress at now (those whose
// timeout has not passed).
func (e *Engine) Progress(now time.Time) []Progress {
	t := e.nanos(now)
	e.ctl.Lock()
	defer e.ctl.Unlock()
	out := []Progress{}
	e.eachShard(func(c *compiled, s *shard) {
		for i := range s.progress.slots {
			sl := &s.progress.slots[i]
			if !sl.used {
				continue
			}
			seq := &c.seqs[sl.v.seq]
			if t-sl.v.start > seq.timeout {
				continue
			}
			out = append(out, Progress{Door: c.policy.Doors[seq.door].Name, Source: sl.k.addr(), Close: seq.close,
				Step: int(sl.v.step), Of: len(seq.ports), Started: e.epoch.Add(time.Duration(sl.v.start))})
		}
	})
	return out
}

// Unban lifts source's ban and forgets its failures, as an operator's
// command; it reports whether the source was banned.
func (e *Engine) Unban(source netip.Addr, now time.Time) bool {
	e.ctl.Lock()
	defer e.ctl.Unlock()
	g := e.gen.Load()
	k := keyOf(source.Unmap(), 0)
	s := g.shardOf(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.penalty.get(k)
	banned := p != nil && p.until > e.nanos(now)
	s.penalty.delete(k)
	return banned
}
