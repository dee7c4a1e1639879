package verdict

import "time"

// Restore re-creates grants saved by an earlier run, such as a state file
// read at start. Grants already over at now, and grants of doors the policy
// no longer has, are skipped. Times are compared by the wall clock, since
// that is all a saved time carries. A grant keeps its expiry, but never
// outlasts the longest grant its door can give now (an SPA client's
// timeout may have asked for more than open_for), and keeps its count of
// connections left, but never above the door's max_connections, nor
// unlimited on a door that has one.
func (e *Engine) Restore(gs []Grant, now time.Time) (restored, skipped int) {
	e.ctl.Lock()
	defer e.ctl.Unlock()
	gen := e.gen.Load()
	c := gen.c
	t := e.nanos(now)
	for _, g := range gs {
		di, ok := c.doorIndex[g.Door]
		left := g.Until.Sub(now)
		if !ok || left <= 0 || !g.Source.IsValid() {
			skipped++
			continue
		}
		door := &c.policy.Doors[di]
		// A saved grant never outlasts what the door grants now: a policy
		// that shortened open_for since should not be bypassed by a restart.
		left = min(left, door.longestGrant())
		ports := portMask(door, g.Ports)
		if ports == 0 {
			skipped++
			continue
		}
		k := keyOf(g.Source.Unmap(), di)
		s := gen.shardOf(k.source())
		s.mu.Lock()
		// Opened is reported only; one in the future reads as now.
		opened := t - min(max(int64(now.Sub(g.Opened)), 0), maxNanos)
		if s.restore(k, grant{opened: opened, until: addSat(t, int64(left)), ports: ports, left: door.connsLeft(g.ConnsLeft)}) {
			restored++
		} else {
			skipped++
		}
		s.mu.Unlock()
	}
	return restored, skipped
}

// restore puts a saved grant in place, unless the shard's grants are full.
// s.mu is held.
func (s *shard) restore(k key, g grant) bool {
	gr := s.grants.get(k)
	if gr == nil {
		if s.grants.full() {
			return false
		}
		gr = s.grants.insert(k)
	}
	*gr = g
	return true
}
