package verdict

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Port classes. A port is at most one of these: rules refuses a policy that
// uses a port both as a knock and as a protected port.
const (
	classNone uint8 = iota
	classKnock
	classProtected
	classSPA
)

// sequence is one knock sequence compiled for lookup: a door's open
// sequence or its close sequence, or one of a TOTP door's two slots.
type sequence struct {
	door    int
	close   bool
	ports   []Port // nil for a TOTP slot: its knocks change every step, see totpLive
	timeout int64  // nanoseconds
	// totp is the index in compiled.totp of the TOTP door this is a slot
	// of, and slot which one; -1 for a fixed sequence.
	totp int32
	slot uint8
}

// totpDoor is a TOTP door and its two sequence slots.
type totpDoor struct {
	door  int
	slots [2]int
	// live is the only part of a compiled policy that changes after
	// compile: the derived sequences, rotated every step. It is a pointer
	// so compiled stays a value that is never copied while in use.
	live *totpLive
}

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

// opener is a door that opens a port, and which of its ports it is.
type opener struct {
	door int32
	bit  uint8
	mix  uint64 // doorMix(door): a grant's hash is its source's, xored with it
}

// compiled is a policy turned into lookup tables. It is immutable once
// built (but for the TOTP doors' live sequences, which have their own
// synchronisation), so Decide reads it without a lock, and a reload
// compiles the new one outside every lock and swaps it in.
type compiled struct {
	policy Policy
	seqs   []sequence
	// Lookup tables indexed by protocol (0 tcp, 1 udp) and port, so the
	// per-packet path is array indexing rather than map lookups.
	class [2][65536]uint8
	// first is 1 + index into seqs of the sequence this port starts; for
	// a port in a TOTP door's range, -(1 + index into totp): which slot
	// starts there changes every step, see firstSeq.
	first   [2][65536]int32
	openers [2][65536]int32 // index into openLists
	spaAt   [2][65536]int32 // index into spaLists
	// openLists holds, per protected port, the doors that open it;
	// spaLists, per SPA port, the doors that listen there. Both start
	// with an empty list, the one index 0 (no such port) finds.
	openLists [][]opener
	spaLists  [][]int
	totp      []totpDoor
	doorIndex map[string]int
}

// Engine decides the verdict for each packet and keeps the knock progress
// and grants of every source. It is safe for concurrent use: the state of
// each source lives in one of several shards, each with its own lock, so
// Decide calls for sources in different shards (several queue readers)
// never wait for each other. See generation.
type Engine struct {
	epoch time.Time
	// gen is the policy in force and the state kept under it. Decide
	// loads it without a lock; Reload swaps it.
	gen atomic.Pointer[generation]
	// ctl serialises the calls that walk every shard or swap the
	// generation (Reload, Sweep, Grants, Stats, Restore...), so that
	// while one of them runs the generation stays put. Decide never takes
	// it.
	ctl sync.Mutex
	// evictedBefore carries the evictions of generations a reload
	// retired, so the counter never goes back. Guarded by ctl.
	evictedBefore uint64
}

func protoIndex(p Proto) int {
	switch p {
	case TCP:
		return 0
	case UDP:
		return 1
	}
	return -1
}

// NewEngine compiles p into lookup tables. now anchors the engine's clock:
// all later times are measured from it, with the monotonic reading when
// now has one, so a wall-clock step cannot stretch or cut a grant.
func NewEngine(p Policy, now time.Time) (*Engine, error) {
	c, err := compile(p)
	if err != nil {
		return nil, err
	}
	e := &Engine{epoch: now}
	e.gen.Store(newGeneration(c))
	return e, nil
}

func compile(p Policy) (*compiled, error) {
	if p.MaxSources <= 0 {
		p.MaxSources = DefaultMaxSources
	}
	if p.MaxGrants <= 0 {
		p.MaxGrants = DefaultMaxGrants
	}
	if p.MaxReplay <= 0 {
		p.MaxReplay = DefaultMaxReplay
	}
	e := &compiled{policy: p, openLists: [][]opener{nil}, spaLists: [][]int{nil}, doorIndex: make(map[string]int, len(p.Doors))}
	for di, d := range p.Doors {
		if _, dup := e.doorIndex[d.Name]; dup {
			return nil, fmt.Errorf("door %q is defined twice", d.Name)
		}
		e.doorIndex[d.Name] = di
		if (len(d.Sequence) == 0 && d.SPA == nil && d.TOTP == nil) || len(d.Open) == 0 {
			return nil, fmt.Errorf("door %q needs a sequence, a totp or an spa block, and ports to open", d.Name)
		}
		if d.TOTP != nil && len(d.Sequence) > 0 {
			return nil, fmt.Errorf("door %q has both a sequence and a totp block", d.Name)
		}
		if d.MaxConnections < 0 {
			return nil, fmt.Errorf("door %q: max_connections is negative", d.Name)
		}
		if len(d.Open) > MaxOpenPorts {
			return nil, fmt.Errorf("door %q opens %d ports, more than %d", d.Name, len(d.Open), MaxOpenPorts)
		}
		if ((len(d.Sequence) > 0 || d.TOTP != nil) && d.SequenceTimeout <= 0) || d.OpenFor <= 0 {
			return nil, fmt.Errorf("door %q needs a positive sequence_timeout and open_for", d.Name)
		}
		if err := e.compileSPA(di, d); err != nil {
			return nil, err
		}
		if len(d.Sequence) > 0xffff || len(d.CloseSequence) > 0xffff {
			return nil, fmt.Errorf("door %q has a sequence longer than 65535 knocks", d.Name)
		}
		for _, s := range []struct {
			ports []Port
			close bool
		}{{d.Sequence, false}, {d.CloseSequence, true}} {
			if len(s.ports) == 0 {
				continue
			}
			for _, k := range s.ports {
				pi := protoIndex(k.Proto)
				if pi < 0 {
					return nil, fmt.Errorf("door %q: knock %v has an unsupported protocol", d.Name, k)
				}
				if e.class[pi][k.Num] == classSPA {
					return nil, fmt.Errorf("door %q: %v is both a knock and an SPA port", d.Name, k)
				}
				e.class[pi][k.Num] = classKnock
			}
			k0 := s.ports[0]
			pi := protoIndex(k0.Proto)
			if prev := e.first[pi][k0.Num]; prev != 0 {
				return nil, fmt.Errorf("door %q: a sequence of door %q already starts with %v",
					d.Name, p.Doors[e.seqs[prev-1].door].Name, k0)
			}
			e.seqs = append(e.seqs, sequence{
				door: di, close: s.close, ports: slices.Clone(s.ports), timeout: int64(d.SequenceTimeout), totp: -1,
			})
			e.first[pi][k0.Num] = int32(len(e.seqs))
		}
	}
	// TOTP ranges are reserved whole, after every other knock is known, so
	// a clash with any rule shows up here or below as a protected port.
	for di, d := range p.Doors {
		if d.TOTP == nil {
			continue
		}
		if err := d.TOTP.validate(); err != nil {
			return nil, fmt.Errorf("door %q: %w", d.Name, err)
		}
		pi := protoIndex(d.TOTP.Proto)
		for n := int(d.TOTP.Lo); n <= int(d.TOTP.Hi); n++ {
			if e.class[pi][n] != classNone {
				return nil, fmt.Errorf("door %q: TOTP range %v/%d-%d overlaps another rule at %v/%d", d.Name, d.TOTP.Proto, d.TOTP.Lo, d.TOTP.Hi, d.TOTP.Proto, n)
			}
			e.class[pi][n] = classKnock
			e.first[pi][n] = -int32(len(e.totp) + 1)
		}
		td := totpDoor{door: di, live: new(totpLive)}
		for i := range td.slots {
			e.seqs = append(e.seqs, sequence{door: di, timeout: int64(d.SequenceTimeout), totp: int32(len(e.totp)), slot: uint8(i)})
			td.slots[i] = len(e.seqs) - 1
		}
		e.totp = append(e.totp, td)
	}
	for di, d := range p.Doors {
		for bit, o := range d.Open {
			pi := protoIndex(o.Proto)
			if pi < 0 {
				return nil, fmt.Errorf("door %q: port %v has an unsupported protocol", d.Name, o)
			}
			switch e.class[pi][o.Num] {
			case classKnock:
				return nil, fmt.Errorf("door %q: %v is both a knock and a protected port", d.Name, o)
			case classSPA:
				return nil, fmt.Errorf("door %q: %v is both an SPA port and a protected port", d.Name, o)
			}
			e.class[pi][o.Num] = classProtected
			li := e.openers[pi][o.Num]
			if li == 0 {
				e.openLists = append(e.openLists, nil)
				li = int32(len(e.openLists) - 1)
				e.openers[pi][o.Num] = li
			}
			op := opener{door: int32(di), bit: uint8(bit), mix: doorMix(uint32(di))}
			if slices.ContainsFunc(e.openLists[li], func(x opener) bool { return x.door == op.door }) {
				return nil, fmt.Errorf("door %q opens %v twice", d.Name, o)
			}
			e.openLists[li] = append(e.openLists[li], op)
		}
	}
	return e, nil
}

// Policy returns the policy the engine enforces.
func (e *Engine) Policy() Policy { return e.gen.Load().c.policy }

func (e *Engine) nanos(now time.Time) int64 { return int64(now.Sub(e.epoch)) }

func (c *compiled) allowed(door int, src netip.Addr) bool {
	from := c.policy.Doors[door].AllowFrom
	if len(from) == 0 {
		return true
	}
	for _, p := range from {
		if p.Contains(src) {
			return true
		}
	}
	return false
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
			d.Door = int(c.openLists[c.openers[pi][p.DstPort]][0].door)
		}
	case classSPA:
		// SPA packets are dropped like knocks: the port never answers.
		d.Verdict = Drop
		s.decideSPA(g, d, src, sk, p, pi, now, t, far)
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
		return
	}
	// A TOTP sequence is single-use across sources within its step:
	// whoever completes it first has it, so one sniffed on the wire is
	// worthless to anyone else.
	if sq.totp >= 0 && !c.totp[sq.totp].live.use(sq.slot, counter, k) {
		d.Reason = ReasonKnockReplay
		return
	}
	d.Reason = ReasonOpened
	s.grant(c, gk, t, int64(c.policy.Doors[sq.door].OpenFor), ^uint64(0))
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
	*g = grant{opened: t, until: t + dur, ports: ports, left: uint32(c.policy.Doors[k.door].MaxConnections)}
}

// grantFor finds a live grant of the source k that covers the port, and
// reports the door, or NoDoor. A max_connections grant is charged a
// connection, and ended reports that this was its last.
func (s *shard) grantFor(c *compiled, sk source, pi int, port uint16, t int64) (door int, ended bool) {
	k := sk.k
	for _, op := range c.openLists[c.openers[pi][port]] {
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

// Grant describes a live or just-ended grant.
type Grant struct {
	Door   string
	Source netip.Addr
	Opened time.Time
	Until  time.Time
	// Ports are the door's ports the grant covers; nil means all of them,
	// as after a knock.
	Ports []Port
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

// allPorts is the mask of a door with n open ports.
func allPorts(n int) uint64 {
	if n >= 64 {
		return ^uint64(0)
	}
	return 1<<n - 1
}

// portMask maps ports to the bits of door's open list; ports the door no
// longer opens are left out. nil means every port.
func portMask(door *Door, ports []Port) uint64 {
	if ports == nil {
		return ^uint64(0)
	}
	var m uint64
	for _, p := range ports {
		for i, o := range door.Open {
			if o == p {
				m |= 1 << i
			}
		}
	}
	return m
}

// remapPorts carries a grant's port mask from one version of a door to
// another, whose open list may have changed order or content: the grant
// keeps the ports it covered that the door still opens. A grant of every
// port stays one, as grantOf and portMask treat it. It does not allocate.
func remapPorts(from, to *Door, m uint64) uint64 {
	if m == ^uint64(0) || m == allPorts(len(from.Open)) {
		return ^uint64(0)
	}
	var out uint64
	for i, p := range from.Open {
		if m&(1<<i) == 0 {
			continue
		}
		for j, o := range to.Open {
			if o == p {
				out |= 1 << j
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
}

// Stats returns the engine's occupancy figures, summed over the shards.
// The caps are the policy's: the shards' shares add up to them exactly.
func (e *Engine) Stats() Stats {
	e.ctl.Lock()
	defer e.ctl.Unlock()
	st := Stats{Evictions: e.evictedBefore}
	e.eachShard(func(_ *compiled, s *shard) {
		st.Sources += s.progress.n
		st.MaxSources += s.progress.max
		st.Grants += s.grants.n
		st.MaxGrants += s.grants.max
		st.Evictions += s.evictions
	})
	e.eachReplay(func(r *replayShard) { st.Evictions += r.evictions })
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
