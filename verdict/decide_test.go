package verdict

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func mustPort(s string) Port {
	p, err := ParsePort(s)
	if err != nil {
		panic(err)
	}
	return p
}

func ports(ss ...string) []Port {
	out := make([]Port, len(ss))
	for i, s := range ss {
		out[i] = mustPort(s)
	}
	return out
}

func testPolicy() Policy {
	return Policy{
		Unprotected: Accept,
		Doors: []Door{
			{
				Name:            "ssh",
				Sequence:        ports("tcp/7000", "udp/8000", "tcp/9000"),
				SequenceTimeout: 10 * time.Second,
				CloseSequence:   ports("tcp/9100", "tcp/9200"),
				Open:            ports("tcp/22"),
				OpenFor:         30 * time.Second,
			},
			{
				Name:            "web",
				Sequence:        ports("udp/5000"),
				SequenceTimeout: 5 * time.Second,
				Open:            ports("tcp/8443", "udp/8443"),
				OpenFor:         time.Minute,
				AllowFrom:       []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8::/32")},
			},
		},
	}
}

var (
	alice = netip.MustParseAddr("198.51.100.10")
	bob   = netip.MustParseAddr("203.0.113.20")
	carol = netip.MustParseAddr("2001:db8:1::10")
	gw    = netip.MustParseAddr("192.0.2.1")
)

// pkt builds a packet from src to the gateway: "tcp/22" is a SYN, "tcp/22 ack"
// a bare ACK.
func pkt(src netip.Addr, port string, srcPort uint16, flags ...uint8) Packet {
	p := mustPort(port)
	pk := Packet{Src: src, Dst: gw, Proto: p.Proto, SrcPort: srcPort, DstPort: p.Num}
	if p.Proto == TCP {
		pk.TCPFlags = FlagSYN
		if len(flags) > 0 {
			pk.TCPFlags = flags[0]
		}
	}
	return pk
}

type step struct {
	at     time.Duration
	p      Packet
	v      Verdict
	reason Reason
	door   string // "" means NoDoor
	reset  string
}

func knockSSH(src netip.Addr, at time.Duration, base uint16) []step {
	return []step{
		{at, pkt(src, "tcp/7000", base), Drop, ReasonKnock, "ssh", ""},
		{at + 100*time.Millisecond, pkt(src, "udp/8000", base+1), Drop, ReasonKnock, "ssh", ""},
		{at + 200*time.Millisecond, pkt(src, "tcp/9000", base+2), Drop, ReasonOpened, "ssh", ""},
	}
}

func cat(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name   string
		policy func(*Policy)
		steps  []step
	}{
		{
			name: "protected port closed without knock, unprotected port open",
			steps: []step{
				{0, pkt(alice, "tcp/22", 40000), Drop, ReasonNoGrant, "ssh", ""},
				{0, pkt(alice, "tcp/80", 40001), Accept, ReasonUnprotected, "", ""},
				{0, pkt(alice, "udp/53", 40002), Accept, ReasonUnprotected, "", ""},
			},
		},
		{
			name: "unprotected ports follow the policy default",
			policy: func(p *Policy) {
				p.Unprotected = Drop
			},
			steps: []step{{0, pkt(alice, "tcp/80", 40001), Drop, ReasonUnprotected, "", ""}},
		},
		{
			name: "knock opens for the knocker only, for open_for",
			steps: cat(knockSSH(alice, 0, 1000), []step{
				{time.Second, pkt(alice, "tcp/22", 40000), Accept, ReasonGranted, "ssh", ""},
				{time.Second, pkt(bob, "tcp/22", 40000), Drop, ReasonNoGrant, "ssh", ""},
				{30 * time.Second, pkt(alice, "tcp/22", 40001), Accept, ReasonGranted, "ssh", ""},
				{30*time.Second + 200*time.Millisecond, pkt(alice, "tcp/22", 40002), Drop, ReasonNoGrant, "ssh", ""},
			}),
		},
		{
			name: "a grant admits non-SYN packets of the source too",
			steps: cat(knockSSH(alice, 0, 1000), []step{
				{time.Second, pkt(alice, "tcp/22", 40000, FlagACK), Accept, ReasonGranted, "ssh", ""},
			}),
		},
		{
			name: "wrong order never opens",
			steps: []step{
				{0, pkt(alice, "udp/8000", 1000), Drop, ReasonKnockWrong, "", ""},
				{0, pkt(alice, "tcp/9000", 1001), Drop, ReasonKnockWrong, "", ""},
				{0, pkt(alice, "tcp/7000", 1002), Drop, ReasonKnock, "ssh", ""},
				{0, pkt(alice, "tcp/9000", 1003), Drop, ReasonKnockWrong, "", "ssh"},
				{0, pkt(alice, "udp/8000", 1004), Drop, ReasonKnockWrong, "", ""},
				{time.Second, pkt(alice, "tcp/22", 40000), Drop, ReasonNoGrant, "ssh", ""},
			},
		},
		{
			name: "a stray packet to another port resets",
			steps: []step{
				{0, pkt(alice, "tcp/7000", 1000), Drop, ReasonKnock, "ssh", ""},
				{0, pkt(alice, "tcp/80", 1001), Accept, ReasonUnprotected, "", "ssh"},
				{0, pkt(alice, "udp/8000", 1002), Drop, ReasonKnockWrong, "", ""},
				{0, pkt(alice, "tcp/9000", 1003), Drop, ReasonKnockWrong, "", ""},
				{time.Second, pkt(alice, "tcp/22", 40000), Drop, ReasonNoGrant, "ssh", ""},
			},
		},
		{
			name: "a packet to a protected port mid-sequence resets",
			steps: []step{
				{0, pkt(alice, "tcp/7000", 1000), Drop, ReasonKnock, "ssh", ""},
				{0, pkt(alice, "tcp/22", 1001), Drop, ReasonNoGrant, "ssh", "ssh"},
				{0, pkt(alice, "udp/8000", 1002), Drop, ReasonKnockWrong, "", ""},
			},
		},
		{
			name: "a retransmitted SYN of the step just matched is harmless",
			steps: []step{
				{0, pkt(alice, "tcp/7000", 1000), Drop, ReasonKnock, "ssh", ""},
				{time.Second, pkt(alice, "tcp/7000", 1000), Drop, ReasonKnockRetransmit, "ssh", ""},
				{time.Second, pkt(alice, "udp/8000", 1001), Drop, ReasonKnock, "ssh", ""},
				{time.Second, pkt(alice, "tcp/9000", 1002), Drop, ReasonOpened, "ssh", ""},
				{3 * time.Second, pkt(alice, "tcp/9000", 1002), Drop, ReasonKnockWrong, "", ""},
				{3 * time.Second, pkt(alice, "tcp/22", 40000), Accept, ReasonGranted, "ssh", ""},
			},
		},
		{
			name: "the first knock again from a new socket restarts the sequence",
			steps: []step{
				{0, pkt(alice, "tcp/7000", 1000), Drop, ReasonKnock, "ssh", ""},
				{0, pkt(alice, "tcp/7000", 2000), Drop, ReasonKnock, "ssh", "ssh"},
				{0, pkt(alice, "udp/8000", 2001), Drop, ReasonKnock, "ssh", ""},
				{0, pkt(alice, "tcp/9000", 2002), Drop, ReasonOpened, "ssh", ""},
			},
		},
		{
			name: "stray ACKs and RSTs neither advance nor reset",
			steps: []step{
				{0, pkt(alice, "tcp/7000", 1000), Drop, ReasonKnock, "ssh", ""},
				{0, pkt(alice, "tcp/9000", 1001, FlagACK), Drop, ReasonKnockWrong, "", ""},
				{0, pkt(alice, "tcp/80", 1001, FlagRST), Accept, ReasonUnprotected, "", ""},
				{0, pkt(alice, "tcp/9000", 1001, FlagSYN|FlagACK), Drop, ReasonKnockWrong, "", ""},
				{0, pkt(alice, "udp/8000", 1002), Drop, ReasonKnock, "ssh", ""},
				{0, pkt(alice, "tcp/9000", 1003), Drop, ReasonOpened, "ssh", ""},
			},
		},
		{
			name: "the whole sequence must fit in sequence_timeout",
			steps: []step{
				{0, pkt(alice, "tcp/7000", 1000), Drop, ReasonKnock, "ssh", ""},
				{5 * time.Second, pkt(alice, "udp/8000", 1001), Drop, ReasonKnock, "ssh", ""},
				{10*time.Second + 1, pkt(alice, "tcp/9000", 1002), Drop, ReasonKnockWrong, "", "ssh"},
				{11 * time.Second, pkt(alice, "tcp/22", 40000), Drop, ReasonNoGrant, "ssh", ""},
			},
		},
		{
			name: "close sequence revokes at once",
			steps: cat(knockSSH(alice, 0, 1000), []step{
				{time.Second, pkt(alice, "tcp/22", 40000), Accept, ReasonGranted, "ssh", ""},
				{2 * time.Second, pkt(alice, "tcp/9100", 1100), Drop, ReasonKnock, "ssh", ""},
				{2 * time.Second, pkt(alice, "tcp/9200", 1101), Drop, ReasonClosed, "ssh", ""},
				{2 * time.Second, pkt(alice, "tcp/22", 40001), Drop, ReasonNoGrant, "ssh", ""},
			}),
		},
		{
			name: "close sequence of one source leaves another's grant",
			steps: cat(knockSSH(alice, 0, 1000), knockSSH(bob, 0, 1000), []step{
				{2 * time.Second, pkt(bob, "tcp/9100", 1100), Drop, ReasonKnock, "ssh", ""},
				{2 * time.Second, pkt(bob, "tcp/9200", 1101), Drop, ReasonClosed, "ssh", ""},
				{2 * time.Second, pkt(alice, "tcp/22", 40001), Accept, ReasonGranted, "ssh", ""},
				{2 * time.Second, pkt(bob, "tcp/22", 40001), Drop, ReasonNoGrant, "ssh", ""},
			}),
		},
		{
			name: "knocking again extends the grant",
			steps: cat(knockSSH(alice, 0, 1000), knockSSH(alice, 20*time.Second, 2000), []step{
				{45 * time.Second, pkt(alice, "tcp/22", 40001), Accept, ReasonGranted, "ssh", ""},
				{51 * time.Second, pkt(alice, "tcp/22", 40002), Drop, ReasonNoGrant, "ssh", ""},
			}),
		},
		{
			name: "allow_from limits who may knock",
			steps: []step{
				{0, pkt(bob, "udp/5000", 1000), Drop, ReasonNotAllowed, "web", ""},
				{0, pkt(bob, "tcp/8443", 40000), Drop, ReasonNoGrant, "web", ""},
				{0, pkt(alice, "udp/5000", 1000), Drop, ReasonOpened, "web", ""},
				{0, pkt(alice, "tcp/8443", 40000), Accept, ReasonGranted, "web", ""},
				{0, pkt(alice, "udp/8443", 40000), Accept, ReasonGranted, "web", ""},
				{0, pkt(alice, "tcp/22", 40000), Drop, ReasonNoGrant, "ssh", ""},
			},
		},
		{
			name: "IPv6 alike",
			steps: cat(knockSSH(carol, 0, 1000), []step{
				{time.Second, pkt(carol, "tcp/22", 40000), Accept, ReasonGranted, "ssh", ""},
				{time.Second, pkt(netip.MustParseAddr("2001:db8:1::11"), "tcp/22", 40000), Drop, ReasonNoGrant, "ssh", ""},
				{time.Second, pkt(carol, "udp/5000", 1000), Drop, ReasonOpened, "web", ""},
				{time.Second, pkt(carol, "tcp/8443", 40001), Accept, ReasonGranted, "web", ""},
			}),
		},
		{
			name: "an IPv4-mapped source is the IPv4 source",
			steps: cat(knockSSH(alice, 0, 1000), []step{
				{time.Second, pkt(netip.AddrFrom16(alice.As16()), "tcp/22", 40000), Accept, ReasonGranted, "ssh", ""},
			}),
		},
		{
			name: "packets the engine cannot judge are dropped",
			steps: []step{
				{0, Packet{Src: alice, Proto: 1, DstPort: 22}, Drop, ReasonMalformed, "", ""},
				{0, Packet{Src: alice, Proto: TCP, DstPort: 0, TCPFlags: FlagSYN}, Drop, ReasonMalformed, "", ""},
				{0, Packet{Proto: TCP, DstPort: 22, TCPFlags: FlagSYN}, Drop, ReasonMalformed, "", ""},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPolicy()
			if tt.policy != nil {
				tt.policy(&p)
			}
			e, err := NewEngine(p, t0)
			if err != nil {
				t.Fatal(err)
			}
			doorName := func(i int) string {
				if i == NoDoor {
					return ""
				}
				return p.Doors[i].Name
			}
			for i, s := range tt.steps {
				got := e.Decide(s.p, t0.Add(s.at))
				if got.DoorName != doorName(got.Door) || got.ResetName != doorName(got.Reset) {
					t.Fatalf("step %d: DoorName %q ResetName %q, but Door and Reset index %q and %q",
						i, got.DoorName, got.ResetName, doorName(got.Door), doorName(got.Reset))
				}
				if got.Verdict != s.v || got.Reason != s.reason || doorName(got.Door) != s.door || doorName(got.Reset) != s.reset {
					t.Fatalf("step %d (%v from %v at %v): got %v/%v door %q reset %q, want %v/%v door %q reset %q",
						i, Port{s.p.Proto, s.p.DstPort}, s.p.Src, s.at,
						got.Verdict, got.Reason, doorName(got.Door), doorName(got.Reset),
						s.v, s.reason, s.door, s.reset)
				}
			}
		})
	}
}

// A sequential SYN scan of every port, the way nmap -sS -r sends it, must
// never open an ascending door: knockd opens 7000,8000,9000 this way.
func TestSequentialScanNeverOpens(t *testing.T) {
	p := testPolicy()
	p.Doors = append(p.Doors, Door{
		Name: "ascending", Sequence: ports("tcp/1000", "tcp/2000", "tcp/3000"),
		SequenceTimeout: time.Hour, Open: ports("tcp/2222"), OpenFor: time.Hour,
	})
	e, err := NewEngine(p, t0)
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	for pass := 0; pass < 2; pass++ { // nmap probes unanswered ports twice
		for port := 1; port <= 65535; port++ {
			now = now.Add(10 * time.Microsecond)
			d := e.Decide(Packet{Src: alice, Dst: gw, Proto: TCP, SrcPort: 55555, DstPort: uint16(port), TCPFlags: FlagSYN}, now)
			if d.Reason == ReasonOpened {
				t.Fatalf("scan opened door %q at port %d", p.Doors[d.Door].Name, port)
			}
		}
	}
	for _, port := range []string{"tcp/22", "tcp/2222"} {
		if d := e.Decide(pkt(alice, port, 40000), now); d.Verdict != Drop {
			t.Fatalf("%s after scan: %v/%v, want drop", port, d.Verdict, d.Reason)
		}
	}
}

// A flood of first knocks from spoofed sources fills the table, yet a
// knocker who is further along keeps its place and gets in.
func TestFloodEvictsFirstKnocksBeforeProgress(t *testing.T) {
	p := testPolicy()
	p.MaxSources = 64
	e, err := NewEngine(p, t0)
	if err != nil {
		t.Fatal(err)
	}
	ks := knockSSH(alice, 0, 1000)
	e.Decide(ks[0].p, t0)
	e.Decide(ks[1].p, t0)
	for i := 0; i < 100_000; i++ {
		src := netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})
		e.Decide(pkt(src, "tcp/7000", uint16(i)), t0.Add(time.Millisecond))
	}
	if st := e.Stats(); st.Sources != 64 || st.Evictions < 100_000-64 {
		t.Fatalf("stats after flood: %+v", st)
	}
	if d := e.Decide(ks[2].p, t0.Add(time.Second)); d.Reason != ReasonOpened {
		t.Fatalf("knocker's last knock after flood: %v, want opened", d.Reason)
	}
}

func TestGrantTableCap(t *testing.T) {
	p := testPolicy()
	p.MaxGrants = 8
	e, err := NewEngine(p, t0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		src := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
		if d := e.Decide(pkt(src, "udp/5000", 1), t0.Add(time.Duration(i)*time.Second)); d.Reason != ReasonOpened {
			t.Fatalf("knock %d: %v", i, d.Reason)
		}
	}
	st := e.Stats()
	if st.Grants != 8 || st.Evictions != 92 {
		t.Fatalf("stats: %+v", st)
	}
	// The newest grant is always kept.
	last := netip.AddrFrom4([4]byte{198, 51, 100, 99})
	if d := e.Decide(pkt(last, "tcp/8443", 2), t0.Add(100*time.Second)); d.Verdict != Accept {
		t.Fatalf("newest grant evicted: %v", d.Reason)
	}
}

func TestDecideDoesNotAllocate(t *testing.T) {
	p := testPolicy()
	p.MaxSources = 1024
	e, err := NewEngine(p, t0)
	if err != nil {
		t.Fatal(err)
	}
	held, _ := NewEngine(p, t0)
	cut := p
	cut.Doors = p.Doors[:1]
	if _, err := held.Reload(cut, t0); err != nil {
		t.Fatal(err)
	}
	i := 0
	knock := knockSSH(carol, 0, 1000)
	cases := map[string]func(){
		"held closed": func() { held.Decide(pkt(alice, "tcp/8443", 1), t0) },
		"unprotected": func() { e.Decide(pkt(alice, "tcp/80", 1), t0) },
		"no grant":    func() { e.Decide(pkt(alice, "tcp/22", 1), t0) },
		"knock, grant and connect": func() {
			for _, s := range knock {
				e.Decide(s.p, t0.Add(s.at))
			}
			e.Decide(pkt(carol, "tcp/22", 1), t0.Add(time.Second))
		},
		"flood of new sources with eviction": func() {
			i++
			e.Decide(pkt(netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)}), "tcp/7000", 1), t0)
		},
	}
	for name, f := range cases {
		if n := testing.AllocsPerRun(5000, f); n != 0 {
			t.Errorf("%s: %v allocations per Decide, want 0", name, n)
		}
	}
}

func ExampleEngine_Decide() {
	e, _ := NewEngine(testPolicy(), t0)
	src := netip.MustParseAddr("198.51.100.7")
	for i, port := range []string{"tcp/22", "tcp/7000", "udp/8000", "tcp/9000", "tcp/22"} {
		d := e.Decide(pkt(src, port, uint16(1000+i)), t0)
		fmt.Println(port, d.Verdict, d.Reason)
	}
	// Output:
	// tcp/22 drop no_grant
	// tcp/7000 drop knock
	// udp/8000 drop knock
	// tcp/9000 drop opened
	// tcp/22 accept granted
}

func TestMaxConnections(t *testing.T) {
	p := testPolicy()
	p.Doors[0].MaxConnections = 2
	e, _ := NewEngine(p, t0)
	for _, s := range knockSSH(alice, 0, 1000) {
		e.Decide(s.p, t0.Add(s.at))
	}
	at := t0.Add(time.Second)
	if d := e.Decide(pkt(alice, "tcp/22", 1), at); d.Verdict != Accept || d.GrantEnded {
		t.Fatalf("first connect: %+v", d)
	}
	if d := e.Decide(pkt(alice, "tcp/22", 2), at); d.Verdict != Accept || !d.GrantEnded {
		t.Fatalf("second connect: %+v", d)
	}
	if d := e.Decide(pkt(alice, "tcp/22", 3), at); d.Verdict != Drop {
		t.Fatalf("third connect: %+v", d)
	}
	// Knocking again gives a fresh allowance.
	for _, s := range knockSSH(alice, 2*time.Second, 2000) {
		e.Decide(s.p, t0.Add(s.at))
	}
	if d := e.Decide(pkt(alice, "tcp/22", 4), t0.Add(3*time.Second)); d.Verdict != Accept {
		t.Fatalf("after a new knock: %+v", d)
	}
}
