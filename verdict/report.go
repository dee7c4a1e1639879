package verdict

import (
	"net/netip"
	"time"
)

// Grant describes a live or just-ended grant.
type Grant struct {
	Door   string
	Source netip.Addr
	Opened time.Time
	Until  time.Time
	// Ports are the door's ports the grant covers; nil means all of them,
	// as after a knock.
	Ports []Port
	// ConnsLeft is how many new connections the grant still admits, on a
	// door with max_connections; 0 means no limit (the door has none).
	ConnsLeft int
}

// Sweep drops timed-out knock progress and expired grants, calling expired
// (which may be nil) for each grant that ended. The daemon calls it from a
// ticker; correctness never depends on it, since Decide compares against
// the expiry itself, but memory does. It locks one shard at a time, so
// packets of other shards go on meanwhile.
func (e *Engine) Sweep(now time.Time, expired func(Grant)) {
	t := e.nanos(now)
	e.ctl.Lock()
	defer e.ctl.Unlock()
	e.eachShard(func(c *compiled, s *shard) {
		within := int64(c.policy.Penalty.Within)
		s.rate.sweep(func(_ key, tat *int64) bool { return *tat <= t })
		s.penalty.sweep(func(_ key, p *penalty) bool { return p.until <= t && t-p.window > within })
		s.progress.sweep(func(_ key, pr *progress) bool {
			return t-pr.start > c.seqs[pr.seq].timeout
		})
		s.grants.sweep(func(k key, gr *grant) bool {
			if gr.until > t {
				return false
			}
			if expired != nil {
				expired(e.grantOf(c, k, gr))
			}
			return true
		})
	})
	e.eachReplay(func(r *replayShard) {
		r.t.sweep(func(_ key, until *int64) bool { return *until <= t })
	})
}

func (e *Engine) grantOf(c *compiled, k key, g *grant) Grant {
	door := &c.policy.Doors[k.door]
	out := Grant{
		Door:   door.Name,
		Source: k.addr(),
		Opened: e.epoch.Add(time.Duration(g.opened)),
		Until:  e.epoch.Add(time.Duration(g.until)),
		// left is 0 for a door without max_connections: no limit.
		ConnsLeft: int(g.left),
	}
	if g.ports != allPorts(len(door.Open)) && g.ports != ^uint64(0) {
		for i, p := range door.Open {
			if g.ports&(1<<i) != 0 {
				out.Ports = append(out.Ports, p)
			}
		}
	}
	return out
}

// eachShard calls f for every shard of the current generation, each under
// its lock in turn. The caller holds e.ctl, so the generation stays put.
func (e *Engine) eachShard(f func(c *compiled, s *shard)) {
	g := e.gen.Load()
	for i := range g.shards {
		s := &g.shards[i]
		s.mu.Lock()
		f(g.c, s)
		s.mu.Unlock()
	}
}

// eachReplay calls f for every share of the current generation's replay
// cache, each under its lock in turn. The caller holds e.ctl.
func (e *Engine) eachReplay(f func(r *replayShard)) {
	g := e.gen.Load()
	for i := range g.replay {
		r := &g.replay[i]
		r.mu.Lock()
		f(r)
		r.mu.Unlock()
	}
}

// Grants returns the live grants, for status reports.
func (e *Engine) Grants(now time.Time) []Grant {
	t := e.nanos(now)
	e.ctl.Lock()
	defer e.ctl.Unlock()
	var out []Grant
	e.eachShard(func(c *compiled, s *shard) {
		for i := range s.grants.slots {
			sl := &s.grants.slots[i]
			if sl.used && sl.v.until > t {
				out = append(out, e.grantOf(c, sl.k, &sl.v))
			}
		}
	})
	return out
}

// Stats are the engine's occupancy figures.
type Stats struct {
	Sources, MaxSources int // sources with a knock sequence in progress
	Grants, MaxGrants   int
	Evictions           uint64
	// PenaltySources counts the sources in the penalty box, banned or
	// with failures counted; MaxPenaltySources is the box's cap (1 when
	// the box is off).
	PenaltySources, MaxPenaltySources int
	// PenaltyFull counts the failures the penalty box could not track,
	// its table being full of live bans, which it never ends early.
	PenaltyFull uint64
	// Replay counts the used SPA packets remembered; MaxReplay is the
	// cache's cap (1 when the policy has no SPA door).
	Replay, MaxReplay int
}

// Stats returns the engine's occupancy figures, summed over the shards.
// The caps are the policy's: the shards' shares add up to them exactly.
func (e *Engine) Stats() Stats {
	e.ctl.Lock()
	defer e.ctl.Unlock()
	st := Stats{Evictions: e.evictedBefore, PenaltyFull: e.penaltyFullBefore}
	e.eachShard(func(_ *compiled, s *shard) {
		st.Sources += s.progress.n
		st.MaxSources += s.progress.max
		st.Grants += s.grants.n
		st.MaxGrants += s.grants.max
		st.Evictions += s.evictions
		st.PenaltySources += s.penalty.n
		st.MaxPenaltySources += s.penalty.max
		st.PenaltyFull += s.penaltyFull
	})
	e.eachReplay(func(r *replayShard) {
		st.Evictions += r.evictions
		st.Replay += r.t.n
		st.MaxReplay += r.t.max
	})
	return st
}

// ActiveGrants counts the live grants per door name, every door of the
// policy included, for metrics and status.
func (e *Engine) ActiveGrants(now time.Time) map[string]int {
	t := e.nanos(now)
	e.ctl.Lock()
	defer e.ctl.Unlock()
	doors := e.gen.Load().c.policy.Doors
	out := make(map[string]int, len(doors))
	for _, d := range doors {
		out[d.Name] = 0
	}
	e.eachShard(func(_ *compiled, s *shard) {
		for i := range s.grants.slots {
			sl := &s.grants.slots[i]
			if sl.used && sl.v.until > t {
				out[doors[sl.k.door].Name]++
			}
		}
	})
	return out
}
