package verdict

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"
)

// Reload swaps in a new policy without losing state. Doors are matched by
// name: a door that still exists keeps its grants, and its knocks in
// progress too unless that sequence changed (they were knocked against the
// old one). Grants of removed doors end and are returned, so the caller can
// log them. An invalid policy changes nothing.
func (e *Engine) Reload(p Policy, now time.Time) (ended []Grant, err error) {
	c, err := compile(p)
	if err != nil {
		return nil, err
	}
	// The new tables are allocated outside the lock; only the moves of
	// surviving entries happen under it.
	progress := newTable[progress](c.policy.MaxSources, rand.Uint64())
	grants := newTable[grant](c.policy.MaxGrants, rand.Uint64())

	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.c
	doorMap := make([]int, len(old.policy.Doors))
	for i, d := range old.policy.Doors {
		doorMap[i] = NoDoor
		if ni, ok := c.doorIndex[d.Name]; ok {
			doorMap[i] = ni
		}
	}
	seqMap := make([]int32, len(old.seqs))
	for i, s := range old.seqs {
		seqMap[i] = -1
		for j, ns := range c.seqs {
			if ns.door == doorMap[s.door] && ns.close == s.close && slices.Equal(ns.ports, s.ports) {
				seqMap[i] = int32(j)
			}
		}
	}
	t := e.nanos(now)
	for i := range e.progress.slots {
		s := &e.progress.slots[i]
		if !s.used || seqMap[s.v.seq] < 0 || progress.full() {
			continue
		}
		pr := progress.insert(s.k)
		*pr = s.v
		pr.seq = seqMap[s.v.seq]
	}
	for i := range e.grants.slots {
		s := &e.grants.slots[i]
		if !s.used || s.v.until <= t {
			continue
		}
		nd := doorMap[s.k.door]
		if nd == NoDoor || grants.full() {
			ended = append(ended, e.grantOf(s.k, &s.v))
			continue
		}
		g := s.v
		if g.ports != ^uint64(0) {
			// The door's open list may have changed order or content: the
			// grant keeps the ports it covered that the door still opens.
			g.ports = portMask(&c.policy.Doors[nd], e.grantOf(s.k, &s.v).Ports)
			if g.ports == 0 {
				ended = append(ended, e.grantOf(s.k, &s.v))
				continue
			}
		}
		k := s.k
		k.door = uint32(nd)
		*grants.insert(k) = g
	}
	// The replay cache, rate limits and penalty box carry over: a reload
	// must not let a used SPA packet through or free a banned source.
	spaNew := newSPAState(c)
	moveAll(&spaNew.replay, &e.spa.replay)
	moveAll(&spaNew.rate, &e.spa.rate)
	pen := newPenaltyTable(c.policy.Penalty)
	moveAll(&pen, &e.penalty)
	e.c, e.progress, e.grants, e.spa, e.penalty = c, progress, grants, spaNew, pen
	return ended, nil
}

// moveAll copies the entries of from into to, as many as fit.
func moveAll[V any](to, from *table[V]) {
	for i := range from.slots {
		s := &from.slots[i]
		if s.used && !to.full() && to.get(s.k) == nil {
			*to.insert(s.k) = s.v
		}
	}
}

// Revoke ends source's grant for door at once, as an operator's command.
// It reports whether there was a live grant.
func (e *Engine) Revoke(door string, source netip.Addr, now time.Time) (bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	di, ok := e.c.doorIndex[door]
	if !ok {
		return false, fmt.Errorf("no door %q in the policy", door)
	}
	k := keyOf(source.Unmap(), di)
	g := e.grants.get(k)
	live := g != nil && g.until > e.nanos(now)
	e.grants.delete(k)
	return live, nil
}

// Restore re-creates grants saved by an earlier run, such as a state file
// read at start. Grants already over at now, and grants of doors the policy
// no longer has, are skipped. Times are compared by the wall clock, since
// that is all a saved time carries.
func (e *Engine) Restore(gs []Grant, now time.Time) (restored, skipped int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.nanos(now)
	for _, g := range gs {
		di, ok := e.c.doorIndex[g.Door]
		left := g.Until.Sub(now)
		if !ok || left <= 0 || !g.Source.IsValid() {
			skipped++
			continue
		}
		// A saved grant never outlasts what the door grants now: a policy
		// that shortened open_for since should not be bypassed by a restart.
		if max := int64(e.c.policy.Doors[di].OpenFor); int64(left) > max {
			left = time.Duration(max)
		}
		k := keyOf(g.Source.Unmap(), di)
		gr := e.grants.get(k)
		if gr == nil {
			if e.grants.full() {
				skipped++
				continue
			}
			gr = e.grants.insert(k)
		}
		ports := portMask(&e.c.policy.Doors[di], g.Ports)
		if ports == 0 {
			skipped++
			continue
		}
		*gr = grant{opened: t - int64(now.Sub(g.Opened)), until: t + int64(left), ports: ports}
		restored++
	}
	return restored, skipped
}
