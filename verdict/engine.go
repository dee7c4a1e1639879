package verdict

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
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
// sequence or its close sequence.
type sequence struct {
	door    int
	close   bool
	ports   []Port
	timeout int64 // nanoseconds
	// TOTP slots change their ports every step: gen counts the changes,
	// so knocks in progress on an old sequence are recognised; counter is
	// the step; used and usedBy remember who completed it, so it cannot
	// be replayed by another source in its step.
	totp    bool
	gen     uint32
	counter uint64
	used    bool
	usedBy  key
}

// totpDoor is a TOTP door and its two sequence slots.
type totpDoor struct {
	door  int
	slots [2]int
}

// progress is a source's place in one sequence.
type progress struct {
	seq     int32
	step    uint16 // knocks matched so far, at least 1
	srcPort uint16 // source port of the last matched knock, to spot retransmits
	gen     uint32 // the sequence's generation (TOTP), see sequence.gen
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
}

// compiled is a policy turned into lookup tables. It is immutable once
// built, so a reload compiles the new one outside the engine's lock and
// swaps it in.
type compiled struct {
	policy Policy
	seqs   []sequence
	// Lookup tables indexed by protocol (0 tcp, 1 udp) and port, so the
	// per-packet path is array indexing rather than map lookups.
	class   [2][65536]uint8
	first   [2][65536]int32 // 1 + index into seqs of the sequence this port starts
	openers [2][65536]int32 // 1 + index into openLists
	spaAt   [2][65536]int32 // 1 + index into spaLists
	// openLists holds, per protected port, the doors that open it;
	// spaLists, per SPA port, the doors that listen there.
	openLists [][]opener
	spaLists  [][]int
	totp      []totpDoor
	doorIndex map[string]int
}

// Engine decides the verdict for each packet and keeps the knock progress
// and grants of every source. It is safe for concurrent use; the lock is
// held only for the table lookups of one packet.
type Engine struct {
	epoch time.Time

	mu        sync.Mutex
	c         *compiled
	progress  table[progress]
	grants    table[grant]
	spa       spaState
	penalty   table[penalty]
	rng       uint64
	evictions uint64
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
	e := &Engine{c: c, epoch: now, rng: rand.Uint64() | 1}
	e.progress = newTable[progress](c.policy.MaxSources, rand.Uint64())
	e.grants = newTable[grant](c.policy.MaxGrants, rand.Uint64())
	e.spa = newSPAState(c)
	e.penalty = newPenaltyTable(c.policy.Penalty)
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
				door: di, close: s.close, ports: slices.Clone(s.ports), timeout: int64(d.SequenceTimeout),
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
		}
		td := totpDoor{door: di}
		for i := range td.slots {
			e.seqs = append(e.seqs, sequence{door: di, totp: true, timeout: int64(d.SequenceTimeout)})
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
			op := opener{door: int32(di), bit: uint8(bit)}
			if slices.ContainsFunc(e.openLists[li], func(x opener) bool { return x.door == op.door }) {
				return nil, fmt.Errorf("door %q opens %v twice", d.Name, o)
			}
			e.openLists[li] = append(e.openLists[li], op)
		}
	}
	return e, nil
}

// Policy returns the policy the engine enforces.
func (e *Engine) Policy() Policy {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.c.policy
}

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
// progress and grants. It does not allocate.
func (e *Engine) Decide(p Packet, now time.Time) (d Decision) {
	// d is a named result so that the deferred penalize sees, and can
	// mark, the final decision.
	d = Decision{Verdict: Drop, Reason: ReasonMalformed, Door: NoDoor, Reset: NoDoor}
	pi := protoIndex(p.Proto)
	if pi < 0 || p.DstPort == 0 || !p.Src.IsValid() {
		return d
	}
	t := e.nanos(now)
	src := p.Src.Unmap()

	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.c
	cls := c.class[pi][p.DstPort]
	if cls == classKnock || cls == classSPA {
		if e.banned(src, t) {
			d.Verdict, d.Reason = Drop, ReasonPenalized
			return d
		}
		if len(c.totp) > 0 && cls == classKnock {
			e.rotateTOTP(now)
		}
		defer e.penalize(&d, src, t)
	}

	tracked := false
	if isKnock(&p) {
		tracked = e.track(&d, src, Port{p.Proto, p.DstPort}, p.SrcPort, pi, cls, t)
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
		if door, ended := e.grantFor(src, pi, p.DstPort, t); door >= 0 {
			d.Verdict, d.Reason, d.Door, d.GrantEnded = Accept, ReasonGranted, door, ended
		} else {
			d.Verdict, d.Reason = Drop, ReasonNoGrant
			d.Door = int(c.openLists[c.openers[pi][p.DstPort]][0].door)
		}
	case classSPA:
		// SPA packets are dropped like knocks: the port never answers.
		d.Verdict = Drop
		e.decideSPA(&d, src, &p, pi, now, t)
	default:
		d.Verdict, d.Reason = c.policy.Unprotected, ReasonUnprotected
	}
	return d
}

// track moves the source through its knock sequence. It reports whether the
// packet counted as a knock (set d.Reason and d.Door); a packet that broke a
// sequence in progress sets d.Reset.
func (e *Engine) track(d *Decision, src netip.Addr, port Port, srcPort uint16, pi int, cls uint8, t int64) bool {
	c := e.c
	k := keyOf(src, 0)
	if i := e.progress.find(k); i >= 0 {
		pr := &e.progress.slots[i].v
		s := &c.seqs[pr.seq]
		switch {
		case t-pr.start > s.timeout || pr.gen != s.gen:
			// Too slow, or a TOTP step ago: the sequence is gone, and this
			// packet may start anew.
			d.Reset = s.door
			e.progress.deleteAt(i)
		case s.ports[pr.step] == port:
			pr.step++
			pr.srcPort, pr.last = srcPort, t
			if int(pr.step) == len(s.ports) {
				e.progress.deleteAt(i)
				e.complete(d, src, s, t)
			} else {
				d.Reason, d.Door = ReasonKnock, s.door
			}
			return true
		case s.ports[pr.step-1] == port && pr.srcPort == srcPort:
			// The same socket knocking again on the step just matched is a
			// retransmitted SYN (the first one got no answer, by design).
			d.Reason, d.Door = ReasonKnockRetransmit, s.door
			return true
		default:
			// Anything else from this source breaks the sequence: this is
			// what keeps a sequential port scan from walking through an
			// ascending door, which knockd lets happen.
			d.Reset = s.door
			e.progress.deleteAt(i)
		}
	}
	if cls != classKnock {
		return false
	}
	si := c.first[pi][port.Num]
	if si == 0 {
		return false
	}
	s := &c.seqs[si-1]
	if !c.allowed(s.door, src) {
		d.Reason, d.Door = ReasonNotAllowed, s.door
		return true
	}
	if len(s.ports) == 1 {
		e.complete(d, src, s, t)
		return true
	}
	if e.progress.full() {
		e.evictProgress(t)
	}
	pr := e.progress.insert(k)
	*pr = progress{seq: si - 1, step: 1, srcPort: srcPort, gen: s.gen, start: t, last: t}
	d.Reason, d.Door = ReasonKnock, s.door
	return true
}

// complete acts on the last knock of a sequence.
func (e *Engine) complete(d *Decision, src netip.Addr, s *sequence, t int64) {
	d.Door = s.door
	gk := keyOf(src, s.door)
	if s.close {
		e.grants.delete(gk)
		d.Reason = ReasonClosed
		return
	}
	if s.totp {
		// A TOTP sequence is single-use across sources within its step:
		// whoever completes it first has it, so one sniffed on the wire is
		// worthless to anyone else.
		if sk := keyOf(src, 0); s.used && s.usedBy != sk {
			d.Reason = ReasonKnockReplay
			return
		} else {
			s.used, s.usedBy = true, sk
		}
	}
	d.Reason = ReasonOpened
	e.grant(gk, t, int64(e.c.policy.Doors[s.door].OpenFor), ^uint64(0))
}

// grant opens (or renews) a grant for ports, for dur from t. Renewing a
// live grant keeps the ports it already covered.
func (e *Engine) grant(k key, t, dur int64, ports uint64) {
	g := e.grants.get(k)
	if g == nil {
		if e.grants.full() {
			e.evictGrant()
		}
		g = e.grants.insert(k)
	} else if g.until > t {
		ports |= g.ports
	}
	*g = grant{opened: t, until: t + dur, ports: ports, left: uint32(e.c.policy.Doors[k.door].MaxConnections)}
}

// grantFor finds a live grant of src that covers the port, and reports the
// door, or NoDoor. A max_connections grant is charged a connection, and
// ended reports that this was its last.
func (e *Engine) grantFor(src netip.Addr, pi int, port uint16, t int64) (door int, ended bool) {
	c := e.c
	for _, op := range c.openLists[c.openers[pi][port]] {
		k := keyOf(src, int(op.door))
		i := e.grants.find(k)
		if i < 0 {
			continue
		}
		g := &e.grants.slots[i].v
		if g.until <= t || g.ports&(1<<op.bit) == 0 {
			continue
		}
		if g.left > 0 {
			if g.left--; g.left == 0 {
				e.grants.deleteAt(i)
				return int(op.door), true
			}
		}
		return int(op.door), false
	}
	return NoDoor, false
}

func (e *Engine) rand() uint64 {
	// xorshift64: the eviction sample needs to be unpredictable enough that
	// a flood cannot steer it, not cryptographic.
	x := e.rng
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	e.rng = x
	return x
}

// evictProgress makes room in a full progress table. From a random sample it
// evicts the sequence least worth keeping: one already timed out, else the
// one with the fewest knocks matched, else the oldest. A flood of spoofed
// first knocks thus pushes out its own kind before a knocker who is further
// along.
func (e *Engine) evictProgress(t int64) {
	seqs := e.c.seqs
	e.progress.evict(e.rand(), func(p *progress) uint64 {
		if t-p.start > seqs[p.seq].timeout {
			return 0
		}
		// Knocks matched first, then recency: last in units of 65.5µs
		// (ns >> 16), whose 48 bits outlast any uptime.
		return uint64(p.step)<<48 | since(p.last)>>16&(1<<48-1)
	})
	e.evictions++
}

// evictGrant makes room in a full grant table by ending, from a random
// sample, the grant closest to its expiry (or past it).
func (e *Engine) evictGrant() {
	e.grants.evict(e.rand(), func(g *grant) uint64 { return since(g.until) })
	e.evictions++
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
// the expiry itself, but memory does.
func (e *Engine) Sweep(now time.Time, expired func(Grant)) {
	t := e.nanos(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sweepSPA(t)
	e.sweepPenalty(t)
	e.progress.sweep(func(_ key, pr *progress) bool {
		return t-pr.start > e.c.seqs[pr.seq].timeout
	})
	e.grants.sweep(func(k key, g *grant) bool {
		if g.until > t {
			return false
		}
		if expired != nil {
			expired(e.grantOf(k, g))
		}
		return true
	})
}

func (e *Engine) grantOf(k key, g *grant) Grant {
	door := &e.c.policy.Doors[k.door]
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

// Grants returns the live grants, for status reports.
func (e *Engine) Grants(now time.Time) []Grant {
	t := e.nanos(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Grant
	for i := range e.grants.slots {
		s := &e.grants.slots[i]
		if s.used && s.v.until > t {
			out = append(out, e.grantOf(s.k, &s.v))
		}
	}
	return out
}

// Stats are the engine's occupancy figures.
type Stats struct {
	Sources, MaxSources int // sources with a knock sequence in progress
	Grants, MaxGrants   int
	Evictions           uint64
}

// Stats returns the engine's occupancy figures.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return Stats{
		Sources: e.progress.n, MaxSources: e.progress.max,
		Grants: e.grants.n, MaxGrants: e.grants.max,
		Evictions: e.evictions,
	}
}

// ActiveGrants counts the live grants per door name, every door of the
// policy included, for metrics and status.
func (e *Engine) ActiveGrants(now time.Time) map[string]int {
	t := e.nanos(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int, len(e.c.policy.Doors))
	for _, d := range e.c.policy.Doors {
		out[d.Name] = 0
	}
	for i := range e.grants.slots {
		s := &e.grants.slots[i]
		if s.used && s.v.until > t {
			out[e.c.policy.Doors[s.k.door].Name]++
		}
	}
	return out
}
