package verdict

import (
	"bytes"
	"math/bits"
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
// are remapped to the new policy's door and sequence indices, and marked
// retired before it is unlocked, so no packet is decided against a policy
// its state was not remapped to, and none changes a shard after its
// entries moved. Packets wait for the move as they would for one lock; a
// reload is rare.
//
// A table whose cap the new policy leaves as it was is taken over by the
// new generation, its entries remapped in place; only a table whose cap
// changed is allocated anew, and its entries moved. A reload thus costs
// memory only for what it changes: allocating every table anew on each
// reload (tens of MB with the default caps) left the garbage of a
// generation or more for the collector at every SIGHUP, and the daemon's
// RSS grew with each (TestReloadsDoNotGrowMemory).
func (e *Engine) Reload(p Policy, now time.Time) (ended []Grant, err error) {
	e.ctl.Lock()
	defer e.ctl.Unlock()
	// The retired policy's lookup tables are free: a Decide reads them
	// only under a shard lock of its generation, and every such shard was
	// retired under its lock by the reload that retired the policy.
	c, err := compile(p, e.spare)
	if err != nil {
		return nil, err
	}
	c.ring = &e.shared
	e.spare = nil
	// c is not in use yet: marking its held ports needs no lock but ctl.
	e.hold(c)
	old := e.gen.Load()
	// The tables whose caps changed are allocated before any shard is
	// locked; only the moves of surviving entries happen under the locks.
	ng := newGeneration(c, old)
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
	m := remap{e: e, ng: ng, oc: oc, c: c, doorMap: doorMap, seqMap: seqMap, t: e.nanos(now)}
	// When no index or door changes (a SIGHUP with the same policy, or
	// one that only adds doors at the end), a table taken over needs no
	// walk at all: a walk reads every slot, and so makes the whole table
	// resident even where no source ever came.
	m.sameSeqs, m.sameDoors = true, true
	for i, j := range seqMap {
		m.sameSeqs = m.sameSeqs && int(j) == i
	}
	for i, j := range doorMap {
		if j != i {
			m.sameDoors = false
			break
		}
		od, nd := &oc.policy.Doors[i], &c.policy.Doors[i]
		m.sameDoors = m.sameDoors && slices.Equal(od.Open, nd.Open) && od.MaxConnections == nd.MaxConnections
	}

	for i := range old.shards {
		old.shards[i].mu.Lock()
	}
	for i := range old.replay {
		old.replay[i].mu.Lock()
	}
	// A table is taken over only when the shard count is the same, so
	// shard i of the old generation is shard i of the new one then.
	for i := range old.shards {
		os := &old.shards[i]
		e.evictedBefore += os.evictions
		e.penaltyFullBefore += os.penaltyFull
		m.progress(os, i)
		m.grants(os, i)
		// The rate limits and penalty box carry over: a reload must not
		// free a banned source.
		if ng.taken.rate {
			ng.shards[i].rate = os.rate
		} else {
			moveAll(&os.rate, func(k key) *table[int64] { return &ng.shardOf(k).rate })
		}
		if ng.taken.penalty {
			ng.shards[i].penalty = os.penalty
		} else {
			// Live bans move (here) before the counts of sources not
			// banned yet (below), so a smaller box keeps them first.
			moveIf(&os.penalty, func(p *penalty) bool { return p.until > m.t },
				func(k key) *table[penalty] { return &ng.shardOf(k).penalty })
		}
	}
	for i := range old.shards {
		if !ng.taken.penalty {
			moveIf(&old.shards[i].penalty, func(p *penalty) bool { return p.until <= m.t },
				func(k key) *table[penalty] { return &ng.shardOf(k).penalty })
		}
	}
	for i := range old.replay {
		// Nor let a used SPA packet through.
		e.evictedBefore += old.replay[i].evictions
		if ng.taken.replay {
			ng.replay[i].t = old.replay[i].t
		} else {
			moveAll(&old.replay[i].t, func(k key) *table[int64] { return &ng.replayOf(k).t })
		}
	}
	e.gen.Store(ng)
	e.spare = oc.portTables
	for i := range old.replay {
		// The old generation keeps no table: what was not taken over is
		// garbage now, whoever still holds the generation.
		old.replay[i].t = table[int64]{}
		old.replay[i].mu.Unlock()
	}
	for i := range old.shards {
		os := &old.shards[i]
		os.progress, os.grants, os.rate, os.penalty = table[progress]{}, table[grant]{}, table[int64]{}, table[penalty]{}
		os.retired = true
		os.mu.Unlock()
	}
	return m.ended, nil
}

// remap carries a shard's knock progress and grants from the old policy's
// indices to the new one's, for Reload.
type remap struct {
	e       *Engine
	ng      *generation
	oc, c   *compiled
	doorMap []int
	seqMap  []int32
	t       int64
	ended   []Grant
	// sameSeqs and sameDoors are set when every sequence and door of the
	// old policy keeps its index (and a door its ports and
	// max_connections) in the new one: then nothing needs remapping.
	sameSeqs, sameDoors bool
}

// progress carries the knocks in progress of the old shard os, the i-th,
// into the new generation: in place when it takes the table over (its
// shard i is then os's counterpart), else each to its shard there.
// Progress on a sequence the new policy changed or dropped is dropped.
func (m *remap) progress(os *shard, i int) {
	if !m.ng.taken.progress {
		for j := range os.progress.slots {
			s := &os.progress.slots[j]
			if !s.used || m.seqMap[s.v.seq] < 0 {
				continue
			}
			to := &m.ng.shardOf(s.k).progress
			if to.full() {
				continue
			}
			pr := to.insert(s.k)
			*pr = s.v
			pr.seq = m.seqMap[s.v.seq]
		}
		return
	}
	ns := &m.ng.shards[i]
	ns.progress = os.progress
	if m.sameSeqs {
		return
	}
	tb := &ns.progress
	// Drop first, then renumber: a deletion may shift an entry already
	// looked at back into a later slot, so the drop must be a test that
	// gives the same answer twice, which renumbering is not.
	tb.sweep(func(_ key, pr *progress) bool { return m.seqMap[pr.seq] < 0 })
	for j := range tb.slots {
		if s := &tb.slots[j]; s.used {
			s.v.seq = m.seqMap[s.v.seq]
		}
	}
}

// grants carries the live grants of the old shard os, the i-th, into the
// new generation, as progress does the knocks (carry says how a grant
// changes); a grant that cannot be carried ends (m.ended).
func (m *remap) grants(os *shard, i int) {
	if !m.ng.taken.grants {
		for j := range os.grants.slots {
			s := &os.grants.slots[j]
			if !s.used || s.v.until <= m.t {
				continue
			}
			k, g, ok := m.carry(s.k, s.v)
			to := &m.ng.shardOf(k.source()).grants
			if !ok || to.full() {
				m.ended = append(m.ended, m.e.grantOf(m.oc, s.k, &s.v))
				continue
			}
			*to.insert(k) = g
		}
		return
	}
	ns := &m.ng.shards[i]
	ns.grants = os.grants
	if m.sameDoors {
		// Expired grants stay until Sweep: Decide compares the expiry
		// itself.
		return
	}
	tb := &ns.grants
	// A grant's key holds its door, so one whose door has another index
	// now is taken out and put back under its new key; the others are
	// carried where they are. As in progress, the sweep's test must give
	// the same answer twice: it changes nothing.
	var moved []slot[grant]
	tb.sweep(func(k key, g *grant) bool {
		if g.until <= m.t {
			return true
		}
		nk, ng, ok := m.carry(k, *g)
		switch {
		case !ok:
			m.ended = append(m.ended, m.e.grantOf(m.oc, k, g))
			return true
		case nk != k:
			moved = append(moved, slot[grant]{k: nk, v: ng})
			return true
		}
		return false
	})
	for j := range tb.slots {
		if s := &tb.slots[j]; s.used {
			_, s.v, _ = m.carry(s.k, s.v)
		}
	}
	for _, s := range moved {
		// Taken out of this very table, so there is room for it.
		*tb.insert(s.k) = s.v
	}
}

// carry is the grant g of the old policy, keyed k, as the new policy has
// it: under its door's new index, with the ports it covered that the door
// still opens (the door's open list may have changed order or content),
// and its connections left within the door's max_connections, which it
// may have gained or lowered. ok is false when the door is gone or opens
// none of the grant's ports now: the grant ends.
func (m *remap) carry(k key, g grant) (key, grant, bool) {
	nd := m.doorMap[k.door]
	if nd == NoDoor {
		return k, g, false
	}
	to := &m.c.policy.Doors[nd]
	if g.ports = remapPorts(&m.oc.policy.Doors[k.door], to, g.ports); g.ports == 0 {
		return k, g, false
	}
	g.left = to.connsLeft(int(g.left))
	k.door = uint32(nd)
	return k, g, true
}

func sameTOTP(a, b *TOTP) bool {
	return bytes.Equal(a.Secret, b.Secret) && a.Step == b.Step && a.Length == b.Length &&
		a.Proto == b.Proto && a.Lo == b.Lo && a.Hi == b.Hi
}

// moveAll copies the entries of from into the tables to picks for their
// keys, as many as fit.
func moveAll[V any](from *table[V], to func(key) *table[V]) {
	moveIf(from, func(*V) bool { return true }, to)
}

// moveIf is moveAll for the entries which picks.
func moveIf[V any](from *table[V], which func(*V) bool, to func(key) *table[V]) {
	for i := range from.slots {
		s := &from.slots[i]
		if !s.used || !which(&s.v) {
			continue
		}
		if t := to(s.k); !t.full() && t.get(s.k) == nil {
			*t.insert(s.k) = s.v
		}
	}
}

// portSet is a set of ports, a bit per port number and protocol.
type portSet [2][65536 / 64]uint64

func (s *portSet) add(pi int, n uint16) { s[pi][n/64] |= 1 << (n % 64) }

// hold keeps every port that a policy since NewEngine protected closed
// under c: one that no door of c names becomes classHeld, dropped with
// ReasonClosedUntilRestart, instead of getting c's unprotected verdict.
// A policy truncated by a careless edit, or an empty file, would otherwise
// open the ports of every door it lost to everyone with the next reload;
// leaving them closed costs at most a restart (which starts from the new
// policy alone) or a door put back. Ports c protects join the set. The
// caller holds ctl, and c is not in use yet.
func (e *Engine) hold(c *compiled) {
	for _, d := range c.policy.Doors {
		for _, o := range d.Open {
			e.everProtected.add(protoIndex(o.Proto), o.Num)
		}
	}
	for pi := range e.everProtected {
		for w, word := range e.everProtected[pi] {
			for ; word != 0; word &= word - 1 {
				n := w*64 + bits.TrailingZeros64(word)
				if c.class[pi][n] != classNone {
					continue
				}
				c.class[pi][n] = classHeld
				proto := TCP
				if pi == 1 {
					proto = UDP
				}
				c.held = append(c.held, Port{proto, uint16(n)})
			}
		}
	}
}

// HeldClosed lists the ports an earlier policy since the engine started
// protected that the policy in force does not: they stay closed until a
// restart (or until a door opens them again), whatever the policy's
// unprotected verdict, so the daemon can say so after a reload.
func (e *Engine) HeldClosed() []Port { return slices.Clone(e.gen.Load().c.held) }
