package verdict

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

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
