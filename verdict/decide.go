package verdict

import (
	"net/netip"
	"time"
)

// progress is a source's place in one sequence.
type progress struct {
	seq     int32
	step    uint16 // knocks matched so far, at least 1
	srcPort uint16 // source port of the last matched knock, to spot retransmits
	gen     uint32 // the TOTP slot's generation, see totpSlot.gen; 0 for a fixed sequence
	start   int64  // when the first knock arrived
	last    int64  // when the last matched knock arrived
}

type grant struct {
	opened int64
	until  int64
	// ports has bit i set when the grant covers the door's Open[i]: a
	// knock opens them all, an SPA packet only those it asked for.
	ports uint64
	// left counts the connections a max_connections grant still admits;
	// 0 when the door has no limit.
	left uint32
}

// isKnock reports whether p can count as a knock. TCP knocks are bare SYNs:
// a SYN-ACK, stray ACK or RST that conntrack calls NEW (loose pickup) is not
// something a knock client sends, so it neither advances nor resets.
func isKnock(p *Packet) bool {
	if p.Proto == UDP {
		return true
	}
	return p.TCPFlags&(FlagSYN|FlagACK|FlagRST|FlagFIN) == FlagSYN
}

// Decide returns the verdict for one packet and updates the source's knock
// progress and grants. It does not allocate, and it takes one lock: that
// of the shard holding the source's state.
func (e *Engine) Decide(p Packet, now time.Time) Decision {
	d := Decision{Verdict: Drop, Reason: ReasonMalformed, Door: NoDoor, Reset: NoDoor}
	pi := protoIndex(p.Proto)
	if pi < 0 || p.DstPort == 0 || !p.Src.IsValid() {
		return d
	}
	t := e.nanos(now)
	src := p.Src.Unmap()
	var far farGrant
	g := e.decideLocked(&d, &p, src, pi, now, t, &far)
	if far.dur > 0 {
		e.grantFar(g, &far, t)
	}
	g.c.nameDoors(&d)
	return d
}

// nameDoors sets d's door names from c, the policy d was decided under:
// one step after every path of Decide, so no path can forget it.
func (c *compiled) nameDoors(d *Decision) {
	if d.Door != NoDoor {
		d.DoorName = c.policy.Doors[d.Door].Name
	}
	if d.Reset != NoDoor {
		d.ResetName = c.policy.Doors[d.Reset].Name
	}
}

// decideLocked runs Decide under the lock of the source's shard and
// returns the generation it decided under.
func (e *Engine) decideLocked(d *Decision, p *Packet, src netip.Addr, pi int, now time.Time, t int64, far *farGrant) *generation {
	k := keyOf(src, 0)
	g, s, h := e.lockSource(k)
	defer s.mu.Unlock()
	s.decide(g, d, p, src, source{k, h}, pi, now, t, far)
	return g
}

// source is a packet's source as the shard's tables key it: the key, and
// its hash, computed once per packet.
type source struct {
	k key
	h uint64
}

// decide is Decide for a source whose shard s is locked. An SPA grant for
// another address that lives in another shard is left in far, for Decide
// to make once s is unlocked.
func (s *shard) decide(g *generation, d *Decision, p *Packet, src netip.Addr, sk source, pi int, now time.Time, t int64, far *farGrant) {
	c := g.c
	cls := c.class[pi][p.DstPort]
	if cls == classKnock || cls == classSPA {
		if s.banned(c, sk, t) {
			d.Verdict, d.Reason = Drop, ReasonPenalized
			return
		}
		if len(c.totp) > 0 && cls == classKnock {
			c.rotateTOTP(now)
		}
	}

	tracked := false
	if isKnock(p) {
		tracked = s.track(c, d, src, sk, Port{p.Proto, p.DstPort}, p.SrcPort, pi, cls, t)
	}
	switch cls {
	case classKnock:
		// Knocks are always dropped, silently, so a scanner cannot tell a
		// knock port from any other filtered port.
		d.Verdict = Drop
		if !tracked {
			d.Reason = ReasonKnockWrong
		}
	case classProtected:
		if door, ended := s.grantFor(c, sk, pi, p.DstPort, t); door >= 0 {
			d.Verdict, d.Reason, d.Door, d.GrantEnded = Accept, ReasonGranted, door, ended
		} else {
			d.Verdict, d.Reason = Drop, ReasonNoGrant
			d.Door = int(c.openLists[c.at[pi][p.DstPort]][0].door)
		}
	case classSPA:
		// SPA packets are dropped like knocks: the port never answers.
		d.Verdict = Drop
		s.decideSPA(g, d, src, sk, p, pi, now, t, far)
	case classHeld:
		d.Verdict, d.Reason = Drop, ReasonClosedUntilRestart
	case classCluster:
		if c.peer(src) {
			d.Verdict, d.Reason = Accept, ReasonClusterPeer
		} else {
			d.Verdict, d.Reason = c.policy.Unprotected, ReasonUnprotected
		}
	default:
		d.Verdict, d.Reason = c.policy.Unprotected, ReasonUnprotected
	}
	if cls == classKnock || cls == classSPA {
		// Last, once the packet's reason is known.
		s.penalize(c, d, sk, t)
	}
}

// track moves the source through its knock sequence. It reports whether the
// packet counted as a knock (set d.Reason and d.Door); a packet that broke a
// sequence in progress sets d.Reset.
func (s *shard) track(c *compiled, d *Decision, src netip.Addr, sk source, port Port, srcPort uint16, pi int, cls uint8, t int64) bool {
	if i := s.progress.findH(sk.k, sk.h); i >= 0 {
		pr := &s.progress.slots[i].v
		sq := &c.seqs[pr.seq]
		knocks, gen, counter := c.knocksOf(sq)
		switch {
		case t-pr.start > sq.timeout || pr.gen != gen:
			// Too slow, or a TOTP step ago: the sequence is gone, and this
			// packet may start anew.
			d.Reset = sq.door
			s.progress.deleteAt(i)
		case knocks[pr.step] == port:
			pr.step++
			pr.srcPort, pr.last = srcPort, t
			if int(pr.step) == len(knocks) {
				s.progress.deleteAt(i)
				s.complete(c, d, sk.k, sq, counter, t)
			} else {
				d.Reason, d.Door = ReasonKnock, sq.door
			}
			return true
		case knocks[pr.step-1] == port && pr.srcPort == srcPort:
			// The same socket knocking again on the step just matched is a
			// retransmitted SYN (the first one got no answer, by design).
			d.Reason, d.Door = ReasonKnockRetransmit, sq.door
			return true
		default:
			// Anything else from this source breaks the sequence: this is
			// what keeps a sequential port scan from walking through an
			// ascending door, which knockd lets happen.
			d.Reset = sq.door
			s.progress.deleteAt(i)
		}
	}
	if cls != classKnock {
		return false
	}
	si, knocks, gen, counter := c.firstSeq(pi, port.Num)
	if si < 0 {
		return false
	}
	sq := &c.seqs[si]
	if !c.allowed(sq.door, src) {
		d.Reason, d.Door = ReasonNotAllowed, sq.door
		return true
	}
	if len(knocks) == 1 {
		s.complete(c, d, sk.k, sq, counter, t)
		return true
	}
	if s.progress.full() {
		s.evictProgress(c, t)
	}
	pr := s.progress.insertH(sk.k, sk.h)
	*pr = progress{seq: si, step: 1, srcPort: srcPort, gen: gen, start: t, last: t}
	d.Reason, d.Door = ReasonKnock, sq.door
	return true
}

// complete acts on the last knock of a sequence; counter is the TOTP step
// it was knocked for.
func (s *shard) complete(c *compiled, d *Decision, k key, sq *sequence, counter uint64, t int64) {
	d.Door = sq.door
	gk := k
	gk.door = uint32(sq.door)
	if sq.close {
		s.grants.delete(gk)
		d.Reason = ReasonClosed
		c.ring.push(sharedRaw{kind: SharedRevoke, c: c, k: gk, at: t})
		return
	}
	// A TOTP sequence is single-use across sources within its step:
	// whoever completes it first has it, so one sniffed on the wire is
	// worthless to anyone else.
	if sq.totp >= 0 {
		if !c.totp[sq.totp].live.use(sq.slot, counter, k) {
			d.Reason = ReasonKnockReplay
			return
		}
		c.ring.push(sharedRaw{kind: SharedTOTP, c: c, k: gk, step: counter})
	}
	d.Reason = ReasonOpened
	dur := int64(c.policy.Doors[sq.door].OpenFor)
	s.grant(c, gk, t, dur, ^uint64(0))
	c.ring.push(sharedRaw{kind: SharedGrant, c: c, k: gk, at: t, until: t + dur, ports: ^uint64(0)})
}

// grant opens (or renews) a grant for ports, for dur from t. Renewing a
// live grant keeps the ports it already covered. k's source must belong
// to s.
func (s *shard) grant(c *compiled, k key, t, dur int64, ports uint64) {
	g := s.grants.get(k)
	if g == nil {
		if s.grants.full() {
			s.evictGrant()
		}
		g = s.grants.insert(k)
	} else if g.until > t {
		ports |= g.ports
	}
	*g = grant{opened: t, until: addSat(t, dur), ports: ports, left: uint32(c.policy.Doors[k.door].MaxConnections)}
}

// connsLeft is what a grant carried over from elsewhere (a state file, an
// earlier policy) may still admit on door d: the count it had, at most
// the door's max_connections; a grant that had no count (0, or anything
// not above 0) gets the door's max_connections, since it must never be
// unlimited on a door that limits. 0 when the door has no limit.
func (d *Door) connsLeft(had int) uint32 {
	if d.MaxConnections <= 0 {
		return 0
	}
	if had <= 0 || had > d.MaxConnections {
		return uint32(d.MaxConnections)
	}
	return uint32(had)
}

// grantFor finds a live grant of the source k that covers the port, and
// reports the door, or NoDoor. A max_connections grant is charged a
// connection, and ended reports that this was its last.
func (s *shard) grantFor(c *compiled, sk source, pi int, port uint16, t int64) (door int, ended bool) {
	k := sk.k
	for _, op := range c.openLists[c.at[pi][port]] {
		k.door = uint32(op.door)
		i := s.grants.findH(k, sk.h^op.mix)
		if i < 0 {
			continue
		}
		g := &s.grants.slots[i].v
		if g.until <= t || g.ports&(1<<op.bit) == 0 {
			continue
		}
		if g.left > 0 {
			if g.left--; g.left == 0 {
				s.grants.deleteAt(i)
				return int(op.door), true
			}
		}
		return int(op.door), false
	}
	return NoDoor, false
}

func (s *shard) rand() uint64 {
	// xorshift64: the eviction sample needs to be unpredictable enough that
	// a flood cannot steer it, not cryptographic.
	x := s.rng
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	s.rng = x
	return x
}

// evictProgress makes room in a full progress table. From a random sample it
// evicts the sequence least worth keeping: one already timed out, else the
// one with the fewest knocks matched, else the oldest. A flood of spoofed
// first knocks thus pushes out its own kind before a knocker who is further
// along.
func (s *shard) evictProgress(c *compiled, t int64) {
	seqs := c.seqs
	s.progress.evict(s.rand(), func(p *progress) uint64 {
		if t-p.start > seqs[p.seq].timeout {
			return 0
		}
		// Knocks matched first, then recency: last in units of 65.5µs
		// (ns >> 16), whose 48 bits outlast any uptime.
		return uint64(p.step)<<48 | since(p.last)>>16&(1<<48-1)
	})
	s.evictions++
}

// evictGrant makes room in a full grant table by ending, from a random
// sample, the grant closest to its expiry (or past it).
func (s *shard) evictGrant() {
	s.grants.evict(s.rand(), func(g *grant) uint64 { return since(g.until) })
	s.evictions++
}
