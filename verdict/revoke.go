package verdict

import (
	"fmt"
	"net/netip"
	"time"
)

// Revoke ends source's grant for door at once, as an operator's command.
// It reports whether there was a live grant.
func (e *Engine) Revoke(door string, source netip.Addr, now time.Time) (bool, error) {
	e.ctl.Lock()
	defer e.ctl.Unlock()
	g := e.gen.Load()
	di, ok := g.c.doorIndex[door]
	if !ok {
		return false, fmt.Errorf("no door %q in the policy", door)
	}
	k := keyOf(source.Unmap(), di)
	s := g.shardOf(k.source())
	s.mu.Lock()
	defer s.mu.Unlock()
	gr := s.grants.get(k)
	live := gr != nil && gr.until > e.nanos(now)
	s.grants.delete(k)
	return live, nil
}
