package verdict

import (
	"crypto/rand"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict/fwknop"
)

func spaKeys(t testing.TB) fwknop.Keys {
	t.Helper()
	enc, mac, err := fwknop.GenerateKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k := fwknop.Keys{HMACDigest: fwknop.SHA256}
	if k.Enc, err = fwknop.DecodeKey(enc); err != nil {
		t.Fatal(err)
	}
	if k.HMAC, err = fwknop.DecodeKey(mac); err != nil {
		t.Fatal(err)
	}
	return k
}

// spaPolicy has two SPA doors on one port with different keys, and a knock
// door, so the HMAC has to pick the door.
func spaPolicy(t testing.TB) (Policy, fwknop.Keys, fwknop.Keys) {
	nasKeys, camKeys := spaKeys(t), spaKeys(t)
	p := testPolicy()
	p.Doors = append(p.Doors,
		Door{
			Name: "nas", Open: ports("tcp/2049", "tcp/443", "udp/443"), OpenFor: 30 * time.Second,
			SPA: &SPA{Port: mustPort("udp/62201"), Keys: nasKeys, MaxAge: 120 * time.Second, MaxOpenFor: 5 * time.Minute},
		},
		Door{
			Name: "cam", Open: ports("tcp/554"), OpenFor: 10 * time.Second,
			SPA: &SPA{Port: mustPort("udp/62201"), Keys: camKeys, MaxAge: 60 * time.Second, AnySource: true},
		},
	)
	return p, nasKeys, camKeys
}

type spaMsg struct {
	typ     fwknop.MessageType
	allow   string
	ports   []string
	age     time.Duration // how old the client's clock makes it
	timeout uint32
	command string
}

func spaPacket(t testing.TB, keys fwknop.Keys, src netip.Addr, now time.Time, m spaMsg) Packet {
	t.Helper()
	msg := &fwknop.Message{
		Username: "alice", Timestamp: now.Add(-m.age).Truncate(time.Second), Version: "3.0.0",
		Type: m.typ, AllowIP: netip.MustParseAddr(m.allow), ClientTimeout: m.timeout, Command: m.command,
	}
	for _, s := range m.ports {
		p := mustPort(s)
		msg.Ports = append(msg.Ports, fwknop.Port{Proto: uint8(p.Proto), Num: p.Num})
	}
	if m.typ == fwknop.TypeNATAccess {
		msg.NATHost, msg.NATPort = "192.0.2.10", 22
	}
	b, err := fwknop.EncodeRandom(msg, keys, rand.Reader)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return Packet{Src: src, Dst: gw, Proto: UDP, SrcPort: 40000, DstPort: 62201, Payload: b}
}

func TestSPA(t *testing.T) {
	p, nas, cam := spaPolicy(t)
	other := spaKeys(t)
	now := t0.Add(time.Hour)
	type check struct {
		src  netip.Addr
		port string
		v    Verdict
	}
	tests := []struct {
		name   string
		keys   fwknop.Keys
		src    netip.Addr
		msg    spaMsg
		reason Reason
		door   string
		checks []check
	}{
		{
			name: "access opens the requested port only, for the sender only",
			keys: nas, src: alice, msg: spaMsg{typ: fwknop.TypeAccess, allow: "198.51.100.10", ports: []string{"tcp/2049"}},
			reason: ReasonOpened, door: "nas",
			checks: []check{{alice, "tcp/2049", Accept}, {alice, "tcp/443", Drop}, {bob, "tcp/2049", Drop}},
		},
		{
			name: "the HMAC picks the door",
			keys: cam, src: alice, msg: spaMsg{typ: fwknop.TypeAccess, allow: "198.51.100.10", ports: []string{"tcp/554"}},
			reason: ReasonOpened, door: "cam",
			checks: []check{{alice, "tcp/554", Accept}, {alice, "tcp/2049", Drop}},
		},
		{
			name: "keys of no door", keys: other, src: alice,
			msg:    spaMsg{typ: fwknop.TypeAccess, allow: "198.51.100.10", ports: []string{"tcp/2049"}},
			reason: ReasonSPAInvalid, door: "nas",
			checks: []check{{alice, "tcp/2049", Drop}},
		},
		{
			name: "stale timestamp", keys: nas, src: alice,
			msg:    spaMsg{typ: fwknop.TypeAccess, allow: "198.51.100.10", ports: []string{"tcp/2049"}, age: 121 * time.Second},
			reason: ReasonSPAStale, door: "nas",
		},
		{
			name: "timestamp from the future", keys: nas, src: alice,
			msg:    spaMsg{typ: fwknop.TypeAccess, allow: "198.51.100.10", ports: []string{"tcp/2049"}, age: -5 * time.Minute},
			reason: ReasonSPAStale, door: "nas",
		},
		{
			name: "allow IP other than the source", keys: nas, src: bob,
			msg:    spaMsg{typ: fwknop.TypeAccess, allow: "198.51.100.10", ports: []string{"tcp/2049"}},
			reason: ReasonSPASource, door: "nas",
			checks: []check{{alice, "tcp/2049", Drop}, {bob, "tcp/2049", Drop}},
		},
		{
			name: "0.0.0.0 refused by default", keys: nas, src: alice,
			msg:    spaMsg{typ: fwknop.TypeAccess, allow: "0.0.0.0", ports: []string{"tcp/2049"}},
			reason: ReasonSPASource, door: "nas",
		},
		{
			name: "0.0.0.0 means the source where any source is allowed", keys: cam, src: bob,
			msg:    spaMsg{typ: fwknop.TypeAccess, allow: "0.0.0.0", ports: []string{"tcp/554"}},
			reason: ReasonOpened, door: "cam",
			checks: []check{{bob, "tcp/554", Accept}},
		},
		{
			name: "another allow IP where any source is allowed opens for that IP", keys: cam, src: bob,
			msg:    spaMsg{typ: fwknop.TypeAccess, allow: "198.51.100.10", ports: []string{"tcp/554"}},
			reason: ReasonOpened, door: "cam",
			checks: []check{{alice, "tcp/554", Accept}, {bob, "tcp/554", Drop}},
		},
		{
			name: "a port outside the door", keys: nas, src: alice,
			msg:    spaMsg{typ: fwknop.TypeAccess, allow: "198.51.100.10", ports: []string{"tcp/2049", "tcp/22"}},
			reason: ReasonSPAPorts, door: "nas",
			checks: []check{{alice, "tcp/2049", Drop}, {alice, "tcp/22", Drop}},
		},
		{
			name: "commands are refused", keys: nas, src: alice,
			msg:    spaMsg{typ: fwknop.TypeCommand, allow: "198.51.100.10", command: "touch /tmp/x"},
			reason: ReasonSPACommand, door: "nas",
		},
		{
			name: "NAT access opens the access ports", keys: nas, src: alice,
			msg:    spaMsg{typ: fwknop.TypeNATAccess, allow: "198.51.100.10", ports: []string{"tcp/443", "udp/443"}},
			reason: ReasonOpened, door: "nas",
			checks: []check{{alice, "tcp/443", Accept}, {alice, "udp/443", Accept}, {alice, "tcp/2049", Drop}},
		},
		{
			name: "IPv6 source and allow IP", keys: nas, src: carol,
			msg:    spaMsg{typ: fwknop.TypeAccess, allow: carol.String(), ports: []string{"tcp/443"}},
			reason: ReasonOpened, door: "nas",
			checks: []check{{carol, "tcp/443", Accept}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := NewEngine(p, t0)
			if err != nil {
				t.Fatal(err)
			}
			pk := spaPacket(t, tt.keys, tt.src, now, tt.msg)
			d := e.Decide(pk, now)
			if d.Verdict != Drop || d.Reason != tt.reason || p.Doors[d.Door].Name != tt.door {
				t.Fatalf("got %v/%v door %q, want drop/%v door %q", d.Verdict, d.Reason, p.Doors[d.Door].Name, tt.reason, tt.door)
			}
			for _, c := range tt.checks {
				if got := e.Decide(pkt(c.src, c.port, 50000), now.Add(time.Second)); got.Verdict != c.v {
					t.Errorf("%s from %s: %v/%v, want %v", c.port, c.src, got.Verdict, got.Reason, c.v)
				}
			}
		})
	}
}

func TestSPAReplay(t *testing.T) {
	p, nas, _ := spaPolicy(t)
	now := t0.Add(time.Hour)
	e, _ := NewEngine(p, t0)
	pk := spaPacket(t, nas, alice, now, spaMsg{typ: fwknop.TypeAccess, allow: "198.51.100.10", ports: []string{"tcp/2049"}})
	if d := e.Decide(pk, now); d.Reason != ReasonOpened {
		t.Fatalf("first: %v", d.Reason)
	}
	if d := e.Decide(pk, now.Add(time.Second)); d.Reason != ReasonSPAReplay {
		t.Fatalf("replay: %v", d.Reason)
	}
	// A refused packet is used up too: replaying it from the right
	// source must not work either.
	stolen := spaPacket(t, nas, alice, now, spaMsg{typ: fwknop.TypeAccess, allow: "198.51.100.10", ports: []string{"tcp/2049"}})
	stolen.Src = bob
	if d := e.Decide(stolen, now); d.Reason != ReasonSPASource {
		t.Fatalf("stolen from bob: %v", d.Reason)
	}
	stolen.Src = alice
	if d := e.Decide(stolen, now.Add(2*time.Second)); d.Reason != ReasonSPAReplay {
		t.Fatalf("stolen then from alice: %v", d.Reason)
	}

	// The cache is kept only while a packet could pass max_age, and it
	// survives a restart through ReplayEntries and RestoreReplay.
	saved := e.ReplayEntries(now)
	if len(saved) != 2 {
		t.Fatalf("saved %d replay entries, want 2", len(saved))
	}
	// The state file holds the packets' digests as they are, so it
	// outlives a change of how the engine keys its cache.
	if sum := fwknop.ReplayKey(pk.Payload); !slices.ContainsFunc(saved, func(r ReplayEntry) bool { return r.Key == [20]byte(sum[:20]) }) {
		t.Errorf("no saved entry holds the first 20 bytes of the packet's SHA-256 %x", sum[:20])
	}
	e2, _ := NewEngine(p, now)
	if n, err := e2.RestoreReplay(saved, now.Add(time.Minute)); n != 2 || err != nil {
		t.Fatalf("RestoreReplay = %d, %v", n, err)
	}
	if d := e2.Decide(pk, now.Add(time.Minute+3*time.Second)); d.Reason != ReasonSPAReplay {
		t.Fatalf("replay after restart: %v", d.Reason)
	}
	e2.Sweep(now.Add(121*time.Second), nil)
	if got := e2.ReplayEntries(now.Add(121 * time.Second)); len(got) != 0 {
		t.Fatalf("replay entries outlived max_age: %d", len(got))
	}
}

// A packet's age is checked in whole seconds, so it passes max_age for up
// to a second past its timestamp plus max_age: the replay cache must
// remember it that long too, swept or not. (FuzzEngineInvariants found a
// packet opening twice at 120.5 s of a 120 s max_age.)
func TestSPAReplayAtTheEdgeOfMaxAge(t *testing.T) {
	p, nas, _ := spaPolicy(t) // nas: max_age 120s
	now := t0.Add(time.Hour)
	for _, sweep := range []bool{false, true} {
		e, _ := NewEngine(p, t0)
		pk := spaPacket(t, nas, alice, now, spaMsg{typ: fwknop.TypeAccess, allow: "198.51.100.10", ports: []string{"tcp/2049"}})
		if d := e.Decide(pk, now); d.Reason != ReasonOpened {
			t.Fatalf("first: %v", d.Reason)
		}
		for _, at := range []time.Duration{120 * time.Second, 120*time.Second + 999*time.Millisecond} {
			if sweep {
				e.Sweep(now.Add(at), nil)
			}
			if d := e.Decide(pk, now.Add(at)); d.Reason != ReasonSPAReplay {
				t.Errorf("sweep %v: replayed %v after the packet's timestamp: %v", sweep, at, d.Reason)
			}
		}
		if d := e.Decide(pk, now.Add(121*time.Second)); d.Reason != ReasonSPAStale {
			t.Errorf("sweep %v: replayed 121 s after: %v", sweep, d.Reason)
		}
	}
}

func TestSPAClientTimeout(t *testing.T) {
	p, nas, _ := spaPolicy(t)
	now := t0.Add(time.Hour)
	for _, tt := range []struct {
		timeout uint32
		want    time.Duration
	}{{5, 5 * time.Second}, {3600, 5 * time.Minute}} {
		e, _ := NewEngine(p, t0)
		pk := spaPacket(t, nas, alice, now, spaMsg{typ: fwknop.TypeTimeoutAccess, allow: "198.51.100.10", ports: []string{"tcp/2049"}, timeout: tt.timeout})
		if d := e.Decide(pk, now); d.Reason != ReasonOpened {
			t.Fatalf("timeout %d: %v", tt.timeout, d.Reason)
		}
		if d := e.Decide(pkt(alice, "tcp/2049", 1), now.Add(tt.want-time.Millisecond)); d.Verdict != Accept {
			t.Errorf("timeout %d: refused before %v", tt.timeout, tt.want)
		}
		if d := e.Decide(pkt(alice, "tcp/2049", 1), now.Add(tt.want)); d.Verdict != Drop {
			t.Errorf("timeout %d: still open at %v", tt.timeout, tt.want)
		}
	}
}

func TestSPARateLimit(t *testing.T) {
	p, _, _ := spaPolicy(t)
	e, _ := NewEngine(p, t0)
	junk := Packet{Src: alice, Dst: gw, Proto: UDP, SrcPort: 1, DstPort: 62201, Payload: []byte("not spa")}
	for i := 0; i < spaBurst; i++ {
		if d := e.Decide(junk, t0); d.Reason != ReasonSPAInvalid {
			t.Fatalf("packet %d of the burst: %v", i, d.Reason)
		}
	}
	if d := e.Decide(junk, t0); d.Reason != ReasonSPARateLimited || d.Verdict != Drop {
		t.Fatalf("past the burst: %v", d.Reason)
	}
	if d := e.Decide(junk, t0.Add(spaInterval)); d.Reason != ReasonSPAInvalid {
		t.Fatalf("after one interval: %v", d.Reason)
	}
	junk.Src = bob // another source has its own allowance
	if d := e.Decide(junk, t0); d.Reason != ReasonSPAInvalid {
		t.Fatalf("another source: %v", d.Reason)
	}
}

// Garbage to the SPA port, the cheap flood, costs no allocation; nor does
// a well-formed forgery, which gets as far as every door's HMAC.
func TestSPAGarbageDoesNotAllocate(t *testing.T) {
	p, _, _ := spaPolicy(t)
	p.MaxSources = 1 << 16
	p.MaxReplay = 1 << 16
	e, _ := NewEngine(p, t0)
	for _, payload := range []string{"GET / HTTP/1.0\r\n\r\n", "+" + strings.Repeat("A", 199)} {
		junk := Packet{Dst: gw, Proto: UDP, SrcPort: 1, DstPort: 62201, Payload: []byte(payload)}
		i := 0
		if n := testing.AllocsPerRun(5000, func() {
			i++
			junk.Src = netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})
			if d := e.Decide(junk, t0); d.Reason != ReasonSPAInvalid {
				t.Fatalf("%.10q…: %v", payload, d.Reason)
			}
		}); n != 0 {
			t.Errorf("%v allocations per SPA packet %.10q…", n, payload)
		}
	}
}

func TestSPAGrantsSurviveReloadAndRestore(t *testing.T) {
	p, nas, _ := spaPolicy(t)
	now := t0.Add(time.Hour)
	e, _ := NewEngine(p, t0)
	pk := spaPacket(t, nas, alice, now, spaMsg{typ: fwknop.TypeAccess, allow: "198.51.100.10", ports: []string{"udp/443"}})
	if d := e.Decide(pk, now); d.Reason != ReasonOpened {
		t.Fatal(d.Reason)
	}
	// Reorder the door's ports: the grant must still cover udp/443 only.
	p2 := p
	p2.Doors = append([]Door(nil), p.Doors...)
	p2.Doors[2].Open = ports("udp/443", "tcp/443", "tcp/2049")
	if _, err := e.Reload(p2, now); err != nil {
		t.Fatal(err)
	}
	check := func(e *Engine, at time.Time) {
		t.Helper()
		if d := e.Decide(pkt(alice, "udp/443", 1), at); d.Verdict != Accept {
			t.Errorf("udp/443: %v", d.Reason)
		}
		if d := e.Decide(pkt(alice, "tcp/443", 1), at); d.Verdict != Drop {
			t.Errorf("tcp/443 opened by a grant for udp/443")
		}
	}
	check(e, now.Add(time.Second))
	saved := e.Grants(now.Add(time.Second))
	if len(saved) != 1 || len(saved[0].Ports) != 1 || saved[0].Ports[0] != mustPort("udp/443") {
		t.Fatalf("saved grant: %+v", saved)
	}
	e2, _ := NewEngine(p, now)
	if n, _ := e2.Restore(saved, now.Add(2*time.Second)); n != 1 {
		t.Fatal("not restored")
	}
	check(e2, now.Add(3*time.Second))
}

func BenchmarkSPA(b *testing.B) {
	p, nas, _ := spaPolicy(b)
	now := t0.Add(time.Hour)
	b.Run("garbage", func(b *testing.B) {
		e, _ := NewEngine(p, t0)
		junk := Packet{Src: alice, Dst: gw, Proto: UDP, DstPort: 62201, Payload: make([]byte, 200)}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			e.Decide(junk, now.Add(time.Duration(i)*spaInterval))
		}
	})
	b.Run("valid", func(b *testing.B) {
		pks := make([]Packet, 256)
		for i := range pks {
			pks[i] = spaPacket(b, nas, alice, now, spaMsg{typ: fwknop.TypeAccess, allow: "198.51.100.10", ports: []string{"tcp/2049"}})
		}
		p.MaxReplay = 1 << 20
		e, _ := NewEngine(p, t0)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			pk := pks[i%len(pks)]
			if i > 0 && i%len(pks) == 0 { // every packet once per engine
				b.StopTimer()
				e, _ = NewEngine(p, t0)
				b.StartTimer()
			}
			e.Decide(pk, now.Add(time.Duration(i)*spaInterval))
		}
	})
}
