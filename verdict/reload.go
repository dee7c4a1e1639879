package verdict

import (
	"bytes"
	"slices"
	"time"
)

// Reload swaps in a new policy without losing state. Doors are matched by
// name: a door that still exists keeps its grants, and its knocks in
// progress too unless that sequence changed (they were knocked against the
// old one). Grants of removed doors end and are returned, so the caller can
// log them. An invalid policy changes nothing.
//
// The new policy and its state form a new generation, which replaces the
// old one at once: every shard of the old one is locked while its entries
// move (each to its shard in the new one, by the new policy's door and
// sequence indices), and marked retired before it is unlocked, so no
// packet is decided against a policy its state was not remapped to, and
// none changes a shard after its entries moved. Packets wait for the move
// as they would for one lock; a reload is rare.
func (e *Engine) Reload(p Policy, now time.Time) (ended []Grant, err error) {
	c, err := compile(p)
	if err != nil {
		return nil, err
	}
	c.ring = &e.shared
	// The new tables are allocated before any shard is locked; only the
	// moves of surviving entries happen under the locks.
	ng := newGeneration(c)

	e.ctl.Lock()
	defer e.ctl.Unlock()
	old := e.gen.Load()
	oc := old.c
	doorMap := make([]int, len(oc.policy.Doors))
	for i, d := range oc.policy.Doors {
		doorMap[i] = NoDoor
		if ni, ok := c.doorIndex[d.Name]; ok {
			doorMap[i] = ni
		}
	}
	// A TOTP door whose settings are unchanged keeps its derived
	// sequences and used marks: knocks in progress survive as on a fixed
	// sequence, and a sequence used in this step stays used. Otherwise its
	// knocks are derived anew and progress on the old ones is dropped.
	totpMap := make([]int, len(oc.totp))
	for i, od := range oc.totp {
		totpMap[i] = -1
		nd := doorMap[od.door]
		for j := range c.totp {
			if nd != NoDoor && c.totp[j].door == nd && sameTOTP(oc.policy.Doors[od.door].TOTP, c.policy.Doors[nd].TOTP) {
				c.totp[j].live = od.live
				totpMap[i] = j
			}
		}
	}
	seqMap := make([]int32, len(oc.seqs))
	for i, s := range oc.seqs {
		seqMap[i] = -1
		if s.totp >= 0 {
			if j := totpMap[s.totp]; j >= 0 {
				seqMap[i] = int32(c.totp[j].slots[s.slot])
			}
			continue
		}
		for j, ns := range c.seqs {
			if ns.totp < 0 && ns.door == doorMap[s.door] && ns.close == s.close && slices.Equal(ns.ports, s.ports) {
				seqMap[i] = int32(j)
			}
		}
	}
	t := e.nanos(now)

	for i := range old.shards {
		old.shards[i].mu.Lock()
	}
	for i := range old.replay {
		old.replay[i].mu.Lock()
	}
	for i := range old.shards {
		os := &old.shards[i]
		e.evictedBefore += os.evictions
		for j := range os.progress.slots {
			s := &os.progress.slots[j]
			if !s.used || seqMap[s.v.seq] < 0 {
				continue
			}
			to := &ng.shardOf(s.k).progress
			if to.full() {
				continue
			}
			pr := to.insert(s.k)
			*pr = s.v
			pr.seq = seqMap[s.v.seq]
		}
		for j := range os.grants.slots {
			s := &os.grants.slots[j]
			if !s.used || s.v.until <= t {
				continue
			}
			nd := doorMap[s.k.door]
			to := &ng.shardOf(s.k.source()).grants
			if nd == NoDoor || to.full() {
				ended = append(ended, e.grantOf(oc, s.k, &s.v))
				continue
			}
			g := s.v
			// The door's open list may have changed order or content: the
			// grant keeps the ports it covered that the door still opens.
			if g.ports = remapPorts(&oc.policy.Doors[s.k.door], &c.policy.Doors[nd], g.ports); g.ports == 0 {
				ended = append(ended, e.grantOf(oc, s.k, &s.v))
				continue
			}
			k := s.k
			k.door = uint32(nd)
			*to.insert(k) = g
		}
		// The rate limits and penalty box carry over: a reload must not
		// free a banned source.
		moveAll(&os.rate, func(k key) *table[int64] { return &ng.shardOf(k).rate })
		moveAll(&os.penalty, func(k key) *table[penalty] { return &ng.shardOf(k).penalty })
	}
	for i := range old.replay {
		// Nor let a used SPA packet through.
		e.evictedBefore += old.replay[i].evictions
		moveAll(&old.replay[i].t, func(k key) *table[int64] { return &ng.replayOf(k).t })
	}
	e.gen.Store(ng)
	for i := range old.replay {
		old.replay[i].mu.Unlock()
	}
	for i := range old.shards {
		old.shards[i].retired = true
		old.shards[i].mu.Unlock()
	}
	return ended, nil
}

func sameTOTP(a, b *TOTP) bool {
	return bytes.Equal(a.Secret, b.Secret) && a.Step == b.Step && a.Length == b.Length &&
		a.Proto == b.Proto && a.Lo == b.Lo && a.Hi == b.Hi
}

// moveAll copies the entries of from into the tables to picks for their
// keys, as many as fit.
func moveAll[V any](from *table[V], to func(key) *table[V]) {
	for i := range from.slots {
		s := &from.slots[i]
		if !s.used {
			continue
		}
		if t := to(s.k); !t.full() && t.get(s.k) == nil {
			*t.insert(s.k) = s.v
		}
	}
}
