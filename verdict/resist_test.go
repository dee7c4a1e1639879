package verdict

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func totpPolicy() Policy {
	p := testPolicy()
	p.Doors = append(p.Doors, Door{
		Name: "otp", SequenceTimeout: 10 * time.Second, Open: ports("tcp/2222"), OpenFor: time.Minute,
		TOTP: &TOTP{Secret: []byte("0123456789abcdef0123"), Step: 30 * time.Second, Length: 4, Proto: UDP, Lo: 40000, Hi: 40999},
	})
	return p
}

// knockTOTP sends the sequence of step counter from src, one knock a
// millisecond from at.
func knockTOTP(e *Engine, cfg *TOTP, src netip.Addr, counter uint64, at time.Time) Decision {
	var d Decision
	for i, k := range cfg.Sequence(counter, nil) {
		d = e.Decide(Packet{Src: src, Dst: gw, Proto: k.Proto, SrcPort: uint16(3000 + i), DstPort: k.Num}, at.Add(time.Duration(i)*time.Millisecond))
	}
	return d
}

func TestTOTPSequence(t *testing.T) {
	cfg := totpPolicy().Doors[2].TOTP
	a, b := cfg.Sequence(1000, nil), cfg.Sequence(1000, nil)
	if fmt.Sprint(a) != fmt.Sprint(b) || len(a) != 4 {
		t.Fatalf("not deterministic: %v %v", a, b)
	}
	if fmt.Sprint(a) == fmt.Sprint(cfg.Sequence(1001, nil)) {
		t.Fatal("two steps share a sequence")
	}
	for _, p := range a {
		if !cfg.Contains(p) {
			t.Fatalf("%v outside the range", p)
		}
	}
	long := *cfg
	long.Length = 20
	if got := long.Sequence(7, nil); len(got) != 20 || fmt.Sprint(got[:4]) != fmt.Sprint(cfg.Sequence(7, nil)) {
		t.Fatalf("long sequence %v", got)
	}
	at := time.Unix(3000, 0)
	if c := cfg.Counter(at); c != 100 || !cfg.StepEnds(c).Equal(time.Unix(3030, 0)) {
		t.Fatalf("counter %d ends %v", c, cfg.StepEnds(c))
	}
}

func TestTOTPDoor(t *testing.T) {
	p := totpPolicy()
	cfg := p.Doors[2].TOTP
	base := time.Unix(1_800_000_000, 0) // a step boundary: 1.8e9 is a multiple of 30
	now := base.Add(10 * time.Second)
	cur := cfg.Counter(now)
	connect := func(e *Engine, src netip.Addr, at time.Time) Verdict {
		return e.Decide(pkt(src, "tcp/2222", 50000), at).Verdict
	}
	t.Run("current step opens", func(t *testing.T) {
		e, _ := NewEngine(p, base)
		if d := knockTOTP(e, cfg, alice, cur, now); d.Reason != ReasonOpened || d.Door != 2 {
			t.Fatalf("%v door %d", d.Reason, d.Door)
		}
		if connect(e, alice, now.Add(time.Second)) != Accept {
			t.Fatal("no grant")
		}
	})
	t.Run("previous step opens", func(t *testing.T) {
		e, _ := NewEngine(p, base)
		if d := knockTOTP(e, cfg, alice, cur-1, now); d.Reason != ReasonOpened {
			t.Fatal(d.Reason)
		}
	})
	t.Run("previous-but-one step does not", func(t *testing.T) {
		e, _ := NewEngine(p, base)
		if d := knockTOTP(e, cfg, alice, cur-2, now); d.Reason == ReasonOpened {
			t.Fatal("a sequence two steps old opened the door")
		}
		if connect(e, alice, now.Add(time.Second)) != Drop {
			t.Fatal("granted")
		}
	})
	t.Run("a knock that straddles a step boundary", func(t *testing.T) {
		e, _ := NewEngine(p, base)
		seq := cfg.Sequence(cur, nil)
		edge := cfg.StepEnds(cur).Add(-time.Second)
		var d Decision
		for i, k := range seq {
			d = e.Decide(Packet{Src: alice, Dst: gw, Proto: k.Proto, SrcPort: uint16(100 + i), DstPort: k.Num}, edge.Add(time.Duration(i)*500*time.Millisecond))
		}
		if d.Reason != ReasonOpened {
			t.Fatalf("straddling knock: %v", d.Reason)
		}
	})
	t.Run("a sequence used by one source is refused to another in its step", func(t *testing.T) {
		e, _ := NewEngine(p, base)
		knockTOTP(e, cfg, alice, cur, now)
		if d := knockTOTP(e, cfg, bob, cur, now.Add(time.Second)); d.Reason != ReasonKnockReplay {
			t.Fatalf("replay by bob: %v", d.Reason)
		}
		if connect(e, bob, now.Add(2*time.Second)) != Drop {
			t.Fatal("bob got in with alice's sequence")
		}
		if d := knockTOTP(e, cfg, alice, cur, now.Add(3*time.Second)); d.Reason != ReasonOpened {
			t.Fatalf("alice again: %v", d.Reason)
		}
		// The next step's sequence is fresh for anyone.
		next := cfg.StepEnds(cur).Add(time.Second)
		if d := knockTOTP(e, cfg, bob, cur+1, next); d.Reason != ReasonOpened {
			t.Fatalf("bob in the next step: %v", d.Reason)
		}
	})
	t.Run("the whole range is dropped and never opens by a scan", func(t *testing.T) {
		e, _ := NewEngine(p, base)
		for n := 40000; n <= 40999; n++ {
			d := e.Decide(Packet{Src: alice, Dst: gw, Proto: UDP, SrcPort: 1, DstPort: uint16(n)}, now)
			if d.Verdict != Drop || d.Reason == ReasonOpened {
				t.Fatalf("udp/%d: %v/%v", n, d.Verdict, d.Reason)
			}
		}
	})
}

func TestTOTPRangeClash(t *testing.T) {
	p := totpPolicy()
	p.Doors[0].Open = ports("tcp/22", "udp/40500")
	if _, err := NewEngine(p, t0); err == nil {
		t.Fatal("a protected port inside a TOTP range was accepted")
	}
	p = totpPolicy()
	p.Doors[1].Sequence = ports("udp/40001")
	if _, err := NewEngine(p, t0); err == nil {
		t.Fatal("a knock inside a TOTP range was accepted")
	}
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

func penaltyPolicy() Policy {
	p := testPolicy()
	p.Penalty = Penalty{Failures: 5, Within: time.Minute, Ban: 10 * time.Minute, MaxSources: 64}
	return p
}

func TestPenaltyBox(t *testing.T) {
	e, _ := NewEngine(penaltyPolicy(), t0)
	// Brute force: wrong knocks on knock ports.
	var d Decision
	for i := 0; i < 5; i++ {
		d = e.Decide(pkt(alice, "tcp/9000", uint16(i)), t0.Add(time.Duration(i)*time.Second))
	}
	if !d.Banned || d.Reason != ReasonKnockWrong {
		t.Fatalf("fifth failure: %+v", d)
	}
	// The right sequence now is ignored.
	for _, s := range knockSSH(alice, 10*time.Second, 1000) {
		if d := e.Decide(s.p, t0.Add(s.at)); d.Reason != ReasonPenalized || d.Verdict != Drop {
			t.Fatalf("knock while banned: %+v", d)
		}
	}
	if d := e.Decide(pkt(alice, "tcp/22", 1), t0.Add(11*time.Second)); d.Verdict != Drop {
		t.Fatal("a banned source knocked its way in")
	}
	// Others are unaffected, and so is alice's ordinary traffic.
	for _, s := range knockSSH(bob, 10*time.Second, 1000) {
		e.Decide(s.p, t0.Add(s.at))
	}
	if d := e.Decide(pkt(bob, "tcp/22", 1), t0.Add(11*time.Second)); d.Verdict != Accept {
		t.Fatal("bob refused")
	}
	if d := e.Decide(pkt(alice, "tcp/80", 1), t0.Add(11*time.Second)); d.Verdict != Accept {
		t.Fatal("public port refused to a banned source")
	}
	// The ban ends.
	later := t0.Add(5*time.Second + 10*time.Minute)
	for _, s := range knockSSH(alice, 0, 2000) {
		e.Decide(s.p, later.Add(s.at))
	}
	if d := e.Decide(pkt(alice, "tcp/22", 1), later.Add(time.Second)); d.Verdict != Accept {
		t.Fatal("still banned after the ban")
	}
}

func TestPenaltyNeedsFailuresWithinTheWindow(t *testing.T) {
	e, _ := NewEngine(penaltyPolicy(), t0)
	for i := 0; i < 10; i++ {
		d := e.Decide(pkt(alice, "tcp/9000", uint16(i)), t0.Add(time.Duration(i)*20*time.Second))
		if d.Banned {
			t.Fatalf("banned at failure %d, spread over %v", i, time.Duration(i)*20*time.Second)
		}
	}
	// Nor do resets by ordinary traffic count: a sequential scan is not a
	// brute force on its own.
	e2, _ := NewEngine(penaltyPolicy(), t0)
	for port := 1; port <= 1024; port++ {
		if d := e2.Decide(pkt(bob, fmt.Sprintf("tcp/%d", port), 1), t0); d.Banned {
			t.Fatalf("banned by an ordinary scan at %d", port)
		}
	}
}

func TestPenaltyFloodStaysBounded(t *testing.T) {
	p := penaltyPolicy()
	p.Penalty.Failures = 1
	e, _ := NewEngine(p, t0)
	// A brute forcer is banned, then a flood of failing spoofed sources
	// churns the box: banned sources are the last to go.
	e.Decide(pkt(alice, "tcp/9000", 1), t0)
	for i := 0; i < 10_000; i++ {
		e.Decide(pkt(netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)}), "tcp/9000", 1), t0.Add(time.Millisecond))
	}
	if n := penaltyEntries(e); n > 64 {
		t.Fatalf("penalty box holds %d, cap 64", n)
	}
	if d := e.Decide(pkt(alice, "tcp/7000", 2), t0.Add(time.Second)); d.Reason != ReasonPenalized {
		t.Logf("alice's ban was evicted by the flood (all 64 entries banned): %v", d.Reason)
	}
}

func TestResistanceDoesNotAllocate(t *testing.T) {
	p := totpPolicy()
	p.Penalty = Penalty{Failures: 3, Within: time.Minute, Ban: time.Minute, MaxSources: 1024}
	p.Doors[0].MaxConnections = 1
	e, _ := NewEngine(p, t0)
	e.gen.Load().c.rotateTOTP(t0) // derive once; a step change derives again, off the measured path
	i := 0
	if n := testing.AllocsPerRun(5000, func() {
		i++
		src := netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})
		e.Decide(Packet{Src: src, Dst: gw, Proto: UDP, SrcPort: 1, DstPort: 40000 + uint16(i%1000)}, t0)
		e.Decide(pkt(src, "tcp/9000", 1), t0)
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

// penaltyEntries counts the penalty box's entries over every shard.
func penaltyEntries(e *Engine) int {
	n := 0
	e.ctl.Lock()
	defer e.ctl.Unlock()
	e.eachShard(func(_ *compiled, s *shard) { n += s.penalty.n })
	return n
}
