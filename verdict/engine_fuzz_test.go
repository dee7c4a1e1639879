package verdict

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict/fwknop"
)

// FuzzEngineInvariants drives an engine with packets, clock steps (back
// and forth, as far as Go's times reach), revokes, sweeps and reloads, all
// chosen by the fuzzer, and checks after each step what must hold
// whatever an attacker sends:
//
//   - a protected port is accepted only for a grant the reference model
//     holds: one opened by a legitimate decision, not revoked, closed,
//     used up or expired since;
//   - a knock door opens only for a source that sent its sequence in
//     order within the timeout, from inside allow_from; a TOTP door only
//     for one that sent a sequence derived for a step of the window; an
//     SPA door only for a packet made with the door's key (the fuzzer
//     cannot forge one: it can only pick one of fuzzSPA's, or send bytes
//     of its own), from its allow IP, within max_age, and once;
//   - a ban never ends early: a source the engine banned is penalized
//     until the ban's end, unless the clock has passed that end since;
//   - no table holds more than its cap (Stats).
//
// The model is a second, simpler account of the same rules: it keeps every
// knock of every source and looks for the sequence in it, instead of a
// state machine with timeouts, resets and evictions. It is thus more
// permissive than the engine, which the checks allow for: each is "the
// engine did X, so the model must allow X".
func FuzzEngineInvariants(f *testing.F) {
	fx := fuzzFixture(f)
	for _, seed := range invariantSeeds(fx) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		runInvariants(t, fx, ops)
	})
}

// The fuzzer's operations, as runInvariants reads them.
func opPacket(src, port, flags, srcPort byte) []byte { return []byte{0, src, port, flags, srcPort} }
func opStep(tenMillis int16) []byte {
	return []byte{1, byte(uint16(tenMillis) >> 8), byte(tenMillis)}
}
func opJump(d time.Duration) []byte {
	return binary.BigEndian.AppendUint64([]byte{2}, uint64(d))
}
func opSPA(k, src byte) []byte { return []byte{3, k, src} }
func opRaw(payload []byte, src byte) []byte {
	return append(append([]byte{4, byte(len(payload))}, payload...), src)
}
func opRevoke(door, src byte) []byte    { return []byte{5, door, src} }
func opSweep() []byte                   { return []byte{6} }
func opReload() []byte                  { return []byte{7} }
func opTOTP(src, window, i byte) []byte { return []byte{8, src, window, i} }

// invariantSeeds start the fuzzer where the doors open: each door opened
// and used (ssh up to max_connections), closed and revoked; a replay of an
// SPA packet from another source, and a copy of one with a byte changed;
// a brute force into the penalty box; clock steps back and to the ends of
// time; reloads and sweeps in between.
func invariantSeeds(fx *fixture) [][]byte {
	cat := func(ops ...[]byte) []byte { return bytes.Join(ops, nil) }
	knockSSH := cat(opPacket(0, 0, 0, 1), opPacket(0, 1, 0, 2), opPacket(0, 2, 0, 3))
	mangled := bytes.Clone(fx.spa[0].payload)
	mangled[len(mangled)/2] ^= 1
	return [][]byte{
		cat(knockSSH, opPacket(0, 5, 0, 4), opPacket(0, 5, 0, 5), opPacket(0, 5, 0, 6), knockSSH, opReload(), opPacket(6, 5, 0, 7),
			opPacket(0, 3, 0, 8), opPacket(0, 4, 0, 9), opPacket(0, 5, 0, 10)),
		cat(opTOTP(1, 1, 0), opTOTP(1, 1, 1), opTOTP(1, 1, 2), opTOTP(1, 1, 3), opPacket(1, 6, 0, 1), opRevoke(1, 1), opPacket(1, 6, 0, 2)),
		cat(opSPA(0, 0), opPacket(0, 7, 0, 1), opSPA(0, 1), opSPA(0, 0), opStep(12000), opSweep(), opSPA(0, 0),
			opJump(-2*time.Minute), opSPA(0, 0), opSPA(3, 3), opPacket(3, 8, 0, 1)),
		cat(opPacket(2, 2, 0, 1), opPacket(2, 2, 0, 2), opPacket(2, 2, 0, 3), opPacket(2, 0, 0, 4),
			opStep(100), opReload(), opPacket(2, 0, 0, 5), opJump(time.Duration(1<<62)), opSweep(), opJump(-time.Duration(1<<62)), opPacket(2, 0, 0, 6)),
		cat(opRaw(mangled, 0), opRaw(fx.spa[2].payload, 2), opPacket(2, 7, 0, 1), opJump(time.Duration(math.MaxInt64)), knockSSH,
			opPacket(0, 5, 0, 1), opJump(time.Duration(math.MinInt64)), opSPA(1, 1)),
	}
}

// The seeds reach every door's opening, a grant used up, a replay, a
// ban, and a protected port refused: the invariants are not checked
// against an engine that never opens.
func TestInvariantSeedsOpenEveryDoor(t *testing.T) {
	fx := fuzzFixture(t)
	seen := map[string]int{}
	for _, seed := range invariantSeeds(fx) {
		m := runInvariants(t, fx, seed)
		for k, n := range m.seen {
			seen[k] += n
		}
	}
	for _, want := range []string{"opened ssh", "opened otp", "opened nas", "granted ssh", "granted otp", "granted nas",
		"ended ssh", "closed ssh", "spa_replay nas", "penalized", "no_grant otp", "spa_invalid nas"} {
		if seen[want] == 0 {
			t.Errorf("no seed gets %q; got %v", want, seen)
		}
	}
}

// fuzzSources are the sources the fuzzer picks from: inside and outside
// the knock door's allow_from, IPv4 and IPv6, and an IPv4 address written
// IPv4-mapped, which must be the same source as its plain form.
var fuzzSources = func() []netip.Addr {
	var out []netip.Addr
	for _, s := range []string{
		"198.51.100.1", "198.51.100.2", "2001:db8::1", "2001:db8::2",
		"203.0.113.1", "203.0.113.2", "::ffff:198.51.100.1", "192.0.2.77",
		"198.51.100.3", "198.51.100.4", "198.51.100.5", "2001:db8::3",
		"2001:db8::4", "203.0.113.3", "203.0.113.4", "198.51.100.6",
	} {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}()

// fuzzPorts are the ports a packet op picks from: every knock, protected,
// SPA and unprotected port of fuzzPolicy, and one from the TOTP range.
var fuzzPorts = []Port{
	{TCP, 7000}, {UDP, 8000}, {TCP, 9000}, {TCP, 9100}, {TCP, 9200},
	{TCP, 22}, {TCP, 23}, {TCP, 2049}, {TCP, 443}, {TCP, 80}, {UDP, 53},
	{UDP, 62201}, {UDP, 40000},
}

// fuzzSPA is a valid SPA packet for the nas door, and what it asks for.
type fuzzSPA struct {
	payload []byte
	ts      time.Time
	allow   netip.Addr
	ports   []Port
	timeout uint32
}

type fixture struct {
	policy, reversed Policy
	spa              []fuzzSPA
}

var (
	fixtureOnce sync.Once
	theFixture  fixture
)

// fuzzFixture builds the policy and the valid SPA packets once, from fixed
// keys and a fixed random stream, so the seeds hold the same packets in
// every run.
func fuzzFixture(tb testing.TB) *fixture {
	fixtureOnce.Do(func() {
		keys := fwknop.Keys{
			Enc:        []byte("fuzz invariants encryption key32"),
			HMAC:       []byte("fuzz invariants HMAC key 32 byte"),
			HMACDigest: fwknop.SHA256,
		}
		p := Policy{
			Unprotected: Accept,
			MaxSources:  8, MaxGrants: 6, MaxReplay: 64,
			Penalty: Penalty{Failures: 3, Within: time.Minute, Ban: 10 * time.Minute, MaxSources: 4},
			Doors: []Door{
				{
					Name: "ssh", Sequence: ports("tcp/7000", "udp/8000", "tcp/9000"), SequenceTimeout: 10 * time.Second,
					CloseSequence: ports("tcp/9100", "tcp/9200"), Open: ports("tcp/22"), OpenFor: 30 * time.Second,
					AllowFrom:      []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8::/32")},
					MaxConnections: 2,
				},
				{
					Name: "otp", SequenceTimeout: 10 * time.Second, Open: ports("tcp/23"), OpenFor: time.Minute,
					TOTP: &TOTP{Secret: []byte("fuzz invariants TOTP secret....."), Step: 30 * time.Second, Length: 4, Proto: UDP, Lo: 40000, Hi: 40015},
				},
				{
					Name: "nas", Open: ports("tcp/2049", "tcp/443"), OpenFor: 20 * time.Second,
					SPA: &SPA{Port: mustPort("udp/62201"), Keys: keys, MaxAge: 2 * time.Minute, MaxOpenFor: 5 * time.Minute},
				},
			},
		}
		rev := p
		rev.Doors = []Door{p.Doors[2], p.Doors[0], p.Doors[1]}
		theFixture = fixture{policy: p, reversed: rev}
		rng := rand.NewChaCha8([32]byte{'k', 'g'})
		for k := range 8 {
			s := fuzzSPA{ts: t0.Add(time.Duration(k) * 40 * time.Second), allow: fuzzSources[k%4], ports: ports("tcp/2049")}
			msg := &fwknop.Message{Username: "fuzz", Timestamp: s.ts, Version: "3.0.0", Type: fwknop.TypeAccess, AllowIP: s.allow}
			if k%2 == 1 {
				s.ports = ports("tcp/443")
				s.timeout = uint32(100 + k)
				msg.Type, msg.ClientTimeout = fwknop.TypeTimeoutAccess, s.timeout
			}
			for _, port := range s.ports {
				msg.Ports = append(msg.Ports, fwknop.Port{Proto: uint8(port.Proto), Num: port.Num})
			}
			b, err := fwknop.EncodeRandom(msg, keys, rng)
			if err != nil {
				panic(err)
			}
			s.payload = b
			theFixture.spa = append(theFixture.spa, s)
		}
	})
	return &theFixture
}

// modelGrant is the model's account of a grant.
type modelGrant struct {
	until int64
	ports uint64 // bits of the door's open list
	left  int    // connections left; -1 for no limit
}

type knockSeen struct {
	port Port
	t    int64
}

type grantKey struct {
	src  netip.Addr
	door string
}

type model struct {
	t          *testing.T
	fx         *fixture
	e          *Engine
	now        time.Time
	hw         int64 // the latest engine time so far
	knocks     map[netip.Addr][]knockSeen
	grants     map[grantKey]modelGrant
	bans       map[netip.Addr]int64 // end of the ban
	spaOpened  map[int]int64        // packet index: the engine time its replay bound passes
	knockPorts map[Port]bool        // ports whose packets the penalty box ignores
	seen       map[string]int       // "reason door" of every decision, for TestInvariantSeedsOpenEveryDoor
}

func runInvariants(t *testing.T, fx *fixture, ops []byte) *model {
	e, err := NewEngine(fx.policy, t0)
	if err != nil {
		t.Fatal(err)
	}
	m := &model{
		t: t, fx: fx, e: e, now: t0,
		knocks: map[netip.Addr][]knockSeen{}, grants: map[grantKey]modelGrant{},
		bans: map[netip.Addr]int64{}, spaOpened: map[int]int64{}, seen: map[string]int{},
		knockPorts: map[Port]bool{{UDP, 62201}: true},
	}
	for _, d := range fx.policy.Doors {
		for _, p := range append(d.Sequence, d.CloseSequence...) {
			m.knockPorts[p] = true
		}
	}
	reversed := false
	arg := func(i int) byte {
		if i < len(ops) {
			return ops[i]
		}
		return 0
	}
	for n := 0; len(ops) > 0 && n < 400; n++ {
		op, used := ops[0]%9, 1
		switch op {
		case 0: // a packet to one of fuzzPorts
			src := fuzzSources[arg(1)%16]
			port := fuzzPorts[int(arg(2))%len(fuzzPorts)]
			if port.Num == 40000 {
				port.Num += uint16(arg(4) % 16)
			}
			p := Packet{Src: src, Dst: gw, Proto: port.Proto, SrcPort: uint16(arg(4)), DstPort: port.Num}
			if port.Proto == TCP {
				p.TCPFlags = []uint8{FlagSYN, FlagSYN, FlagSYN | FlagACK, FlagACK, FlagRST, FlagFIN}[arg(3)%6]
			}
			m.packet(p, -1)
			used = 5
		case 1: // a small clock step, either way: ±327 s in 10 ms units
			m.step(time.Duration(int16(binary.BigEndian.Uint16([]byte{arg(1), arg(2)}))) * 10 * time.Millisecond)
			used = 3
		case 2: // any clock step at all
			var b [8]byte
			for i := range b {
				b[i] = arg(1 + i)
			}
			m.step(time.Duration(binary.BigEndian.Uint64(b[:])))
			used = 9
		case 3: // a valid SPA packet, from any source
			k := int(arg(1)) % len(fx.spa)
			p := Packet{Src: fuzzSources[arg(2)%16], Dst: gw, Proto: UDP, SrcPort: 40000, DstPort: 62201, Payload: fx.spa[k].payload}
			m.packet(p, k)
			used = 3
		case 4: // bytes of the fuzzer's own to the SPA port
			size := min(int(arg(1)), len(ops)-2)
			size = max(size, 0)
			payload := bytes.Clone(ops[2 : 2+size])
			p := Packet{Src: fuzzSources[arg(2+size)%16], Dst: gw, Proto: UDP, SrcPort: 40000, DstPort: 62201, Payload: payload}
			k := -1 // unless the fuzzer copied a valid packet whole
			for i := range fx.spa {
				if bytes.Equal(payload, fx.spa[i].payload) {
					k = i
				}
			}
			m.packet(p, k)
			used = 3 + size
		case 5: // an operator's revoke
			door := fx.policy.Doors[arg(1)%3].Name
			src := fuzzSources[arg(2)%16]
			if _, err := e.Revoke(door, src, m.now); err != nil {
				t.Fatal(err)
			}
			delete(m.grants, grantKey{src.Unmap(), door})
			used = 3
		case 6:
			e.Sweep(m.now, nil)
		case 7: // a reload, with the doors in another order every other time
			p := fx.reversed
			if reversed {
				p = fx.policy
			}
			reversed = !reversed
			ended, err := e.Reload(p, m.now)
			if err != nil {
				t.Fatal(err)
			}
			if len(ended) != 0 {
				t.Fatalf("a reload that keeps every door ended grants: %+v", ended)
			}
		case 8: // a knock of the TOTP sequence of this step, or the one before or after
			cfg := fx.policy.Doors[1].TOTP
			counter := cfg.Counter(m.now) + uint64(arg(2)%3) - 1
			seq := cfg.Sequence(counter, nil)
			port := seq[int(arg(3))%len(seq)]
			m.packet(Packet{Src: fuzzSources[arg(1)%16], Dst: gw, Proto: port.Proto, SrcPort: 1, DstPort: port.Num}, -1)
			used = 4
		}
		ops = ops[min(used, len(ops)):]
		m.checkCaps()
	}
	return m
}

// step moves the clock. The model counts a time as seen once the clock
// was there, whether or not a packet came: a sweep may act on it.
func (m *model) step(d time.Duration) {
	m.now = m.now.Add(d)
	m.hw = max(m.hw, m.e.nanos(m.now))
}

// packet decides p and checks the decision; spa is the index of the valid
// SPA packet it carries, or -1.
func (m *model) packet(p Packet, spa int) {
	t := m.e.nanos(m.now)
	m.hw = max(m.hw, t)
	src := p.Src.Unmap()
	d := m.e.Decide(p, m.now)
	m.seen[strings.TrimSpace(d.Reason.String()+" "+d.DoorName)]++
	if d.GrantEnded {
		m.seen["ended "+d.DoorName]++
	}
	port := Port{p.Proto, p.DstPort}
	if isKnock(&p) {
		m.knocks[src] = append(m.knocks[src], knockSeen{port, t})
	}
	if d.Door != NoDoor && d.DoorName != m.e.Policy().Doors[d.Door].Name {
		m.t.Fatalf("decision names door %d %q, the policy %q", d.Door, d.DoorName, m.e.Policy().Doors[d.Door].Name)
	}

	// A ban never ends early.
	if end, ok := m.bans[src]; ok && (m.knockPorts[port] || (port.Proto == UDP && port.Num >= 40000 && port.Num <= 40015)) {
		if t < end && m.hw < end && d.Reason != ReasonPenalized {
			m.t.Fatalf("%v banned until %d, at %d (latest %d) got %v", src, end, t, m.hw, d.Reason)
		}
	}
	if d.Banned {
		m.bans[src] = addSat(t, int64(m.fx.policy.Penalty.Ban))
	}

	switch d.Reason {
	case ReasonGranted:
		k := grantKey{src, d.DoorName}
		g, ok := m.grants[k]
		door := m.door(d.DoorName)
		bit := -1
		for i, o := range door.Open {
			if o == port {
				bit = i
			}
		}
		switch {
		case !ok:
			m.t.Fatalf("%v accepted on %v by door %q, which never opened for it (or was revoked, closed or used up)", src, port, d.DoorName)
		case g.until <= t:
			m.t.Fatalf("%v accepted on %v by door %q at %d, after the grant's end %d", src, port, d.DoorName, t, g.until)
		case bit < 0 || g.ports&(1<<bit) == 0:
			m.t.Fatalf("%v accepted on %v by door %q, whose grant does not cover it", src, port, d.DoorName)
		case g.left == 0:
			m.t.Fatalf("%v accepted on %v past door %q's max_connections", src, port, d.DoorName)
		}
		if g.left > 0 {
			g.left--
			if g.left == 0 {
				delete(m.grants, k)
				if !d.GrantEnded {
					m.t.Fatalf("the last connection of a grant did not end it")
				}
				break
			}
		}
		m.grants[k] = g
	case ReasonClosed:
		delete(m.grants, grantKey{src, d.DoorName})
	case ReasonOpened:
		m.opened(d, p, src, port, t, spa)
	}
	if d.Verdict == Accept && d.Reason != ReasonGranted && d.Reason != ReasonUnprotected {
		m.t.Fatalf("accepted with reason %v", d.Reason)
	}
	if d.Verdict == Accept && d.Reason == ReasonUnprotected && m.protected(port) {
		m.t.Fatalf("protected port %v accepted as unprotected", port)
	}
}

func (m *model) door(name string) *Door {
	for i := range m.fx.policy.Doors {
		if m.fx.policy.Doors[i].Name == name {
			return &m.fx.policy.Doors[i]
		}
	}
	m.t.Fatalf("no door %q", name)
	return nil
}

func (m *model) protected(p Port) bool {
	for _, d := range m.fx.policy.Doors {
		for _, o := range d.Open {
			if o == p {
				return true
			}
		}
	}
	return false
}

// opened checks that a door that opened had to, and records the grant.
func (m *model) opened(d Decision, p Packet, src netip.Addr, port Port, t int64, spa int) {
	door := m.door(d.DoorName)
	g := modelGrant{until: addSat(t, int64(door.OpenFor)), ports: allPorts(len(door.Open)), left: -1}
	if door.MaxConnections > 0 {
		g.left = door.MaxConnections
	}
	switch {
	case door.SPA != nil:
		if spa < 0 {
			m.t.Fatalf("door %q opened for an SPA packet the fuzzer made: %q", d.DoorName, p.Payload)
		}
		s := &m.fx.spa[spa]
		diff := m.now.Unix() - s.ts.Unix()
		switch {
		case src != s.allow:
			m.t.Fatalf("SPA packet %d for %v opened for %v", spa, s.allow, src)
		case diff > int64(door.SPA.MaxAge/time.Second) || -diff > int64(door.SPA.MaxAge/time.Second):
			m.t.Fatalf("SPA packet %d opened %d s from its timestamp", spa, diff)
		}
		if bound, ok := m.spaOpened[spa]; ok && m.hw < bound {
			m.t.Fatalf("SPA packet %d opened twice (stale from %d, latest time %d)", spa, bound, m.hw)
		}
		// The packet is stale for good once the clock reaches the second
		// after its timestamp plus max_age (CheckAge counts whole
		// seconds); only a clock that went that far and came back may
		// see it open again, once the cache forgot it.
		stale := time.Unix(s.ts.Unix()+int64(door.SPA.MaxAge/time.Second)+1, 0)
		m.spaOpened[spa] = addSat(t, int64(stale.Sub(m.now)))
		g.ports = portMask(door, s.ports)
		if s.timeout > 0 {
			g.until = addSat(t, int64(min(time.Duration(s.timeout)*time.Second, door.maxClientTimeout())))
		}
		if old, ok := m.grants[grantKey{src, d.DoorName}]; ok && old.until > t {
			g.ports |= old.ports
		}
	case door.TOTP != nil:
		cur := door.TOTP.Counter(m.now)
		ok := false
		for _, c := range []uint64{cur - 1, cur, cur + 1} {
			if m.sent(src, door.TOTP.Sequence(c, nil), t, door.SequenceTimeout) {
				ok = true
			}
		}
		if !ok {
			m.t.Fatalf("door %q opened for %v, which sent no sequence of step %d or either side", d.DoorName, src, cur)
		}
	default:
		if !m.sent(src, door.Sequence, t, door.SequenceTimeout) {
			m.t.Fatalf("door %q opened for %v, which did not knock its sequence: %v", d.DoorName, src, m.knocks[src])
		}
		if len(door.AllowFrom) > 0 && !(&compiled{policy: Policy{Doors: []Door{*door}}}).allowed(0, src) {
			m.t.Fatalf("door %q opened for %v, outside allow_from", d.DoorName, src)
		}
	}
	m.grants[grantKey{src, d.DoorName}] = g
}

// sent reports whether src's knocks end with seq's last knock (the packet
// just decided) and hold the rest of seq before it, in order, the first no
// longer than timeout before t. Times need not grow with the order (the
// clock may step back), so every first knock that could start the
// sequence is tried: any before the latest place the middle knocks can
// start from.
func (m *model) sent(src netip.Addr, seq []Port, t int64, timeout time.Duration) bool {
	ks := m.knocks[src]
	last := len(ks) - 1
	if last < 0 || ks[last].port != seq[len(seq)-1] {
		return false
	}
	if len(seq) == 1 {
		return true
	}
	// Match the middle knocks from the end, each as late as it can be.
	at := last
	for need := len(seq) - 2; need >= 1; need-- {
		at--
		for at >= 0 && ks[at].port != seq[need] {
			at--
		}
		if at < 0 {
			return false
		}
	}
	for i := at - 1; i >= 0; i-- {
		if ks[i].port == seq[0] && t-ks[i].t <= int64(timeout) {
			return true
		}
	}
	return false
}

func (m *model) checkCaps() {
	st := m.e.Stats()
	p := &m.fx.policy
	if st.Sources > st.MaxSources || st.MaxSources != p.MaxSources ||
		st.Grants > st.MaxGrants || st.MaxGrants != p.MaxGrants ||
		st.PenaltySources > st.MaxPenaltySources || st.MaxPenaltySources != p.Penalty.MaxSources ||
		st.Replay > st.MaxReplay || st.MaxReplay != p.MaxReplay {
		m.t.Fatalf("tables past their caps: %+v", st)
	}
}
