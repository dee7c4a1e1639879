package verdict

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict/fwknop"
)

// longest is the longest duration Go holds, "2562047h47m16.854775807s":
// what a policy built without rules (which refuses it) could carry.
const longest = time.Duration(math.MaxInt64)

// A deadline now + a duration saturates instead of overflowing into the
// past: with durations as long as Go holds, a used SPA packet stays
// refused and a ban applies (the issue: "2562047h" let a replayed packet
// open again after 48 minutes, and bans never applied).
func TestHugeDurationsSaturate(t *testing.T) {
	p, nas, _ := spaPolicy(t)
	p.Doors[2].SPA.MaxAge = longest
	p.Doors[2].SPA.MaxOpenFor = longest
	p.Doors[0].OpenFor = longest
	p.Penalty = Penalty{Failures: 1, Within: longest, Ban: longest, MaxSources: 64}
	e, err := NewEngine(p, t0)
	if err != nil {
		t.Fatal(err)
	}
	for i, at := range []time.Duration{time.Second, 48 * time.Minute, 24 * time.Hour} {
		mallory := netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
		now := t0.Add(at)
		pk := spaPacket(t, nas, alice, now, spaMsg{typ: fwknop.TypeTimeoutAccess, allow: "198.51.100.10", ports: []string{"tcp/2049"}, timeout: 65535})
		if d := e.Decide(pk, now); d.Reason != ReasonOpened {
			t.Fatalf("at %v: a fresh SPA packet: %v", at, d.Reason)
		}
		if d := e.Decide(pkt(alice, "tcp/2049", 1), now.Add(time.Hour)); d.Verdict != Accept {
			t.Errorf("at %v: the SPA grant of the longest time ended within an hour: %v", at, d.Reason)
		}
		pk.Src = mallory
		if d := e.Decide(pk, now.Add(time.Second)); d.Reason != ReasonSPAReplay {
			t.Errorf("at %v: a replayed SPA packet got %v", at, d.Reason)
		}
		// The replay (a failure) banned mallory, for as long as Go holds.
		if d := e.Decide(pkt(mallory, "tcp/7000", 1), now.Add(2*time.Second)); d.Reason != ReasonPenalized {
			t.Errorf("at %v: the ban did not apply: %v", at, d.Reason)
		}
		e.Sweep(now.Add(3*time.Second), nil)
		if d := e.Decide(pkt(mallory, "tcp/7000", 1), now.Add(4*time.Second)); d.Reason != ReasonPenalized {
			t.Errorf("at %v: a sweep ended the ban: %v", at, d.Reason)
		}
		for _, s := range knockSSH(carol, 0, 1000) {
			e.Decide(s.p, now.Add(s.at))
		}
		if d := e.Decide(pkt(carol, "tcp/22", 1), now.Add(time.Hour)); d.Verdict != Accept {
			t.Errorf("at %v: a knock grant of the longest open_for ended within an hour: %v", at, d.Reason)
		}
		e.Revoke("ssh", carol, now)
		e.Revoke("nas", alice, now)
	}
}

// The engine's clock saturates too: a step of the clock to the far
// future or past (a wall clock set wrong, a fuzzer) leaves every
// difference of two engine times exact, so deadlines stay ordered.
func TestClockStepsSaturate(t *testing.T) {
	e, _ := NewEngine(testPolicy(), t0)
	far := t0.Add(longest)   // 292 years on
	past := t0.Add(-longest) // 292 years back
	if a, b := e.nanos(far), e.nanos(past); a-b <= 0 || a != maxNanos || b != -maxNanos {
		t.Errorf("nanos(far) %d, nanos(past) %d; want ±%d", a, b, int64(maxNanos))
	}
	for _, tt := range []struct{ t, d, want int64 }{
		{maxNanos, math.MaxInt64, math.MaxInt64},
		{1, math.MaxInt64, math.MaxInt64},
		{-maxNanos, math.MaxInt64, math.MaxInt64 - maxNanos},
		{5, 7, 12},
	} {
		if got := addSat(tt.t, tt.d); got != tt.want {
			t.Errorf("addSat(%d, %d) = %d, want %d", tt.t, tt.d, got, tt.want)
		}
	}
	// A knock from the far past, then one from the far future: the
	// sequence has timed out, not looped round.
	e.Decide(pkt(alice, "tcp/7000", 1), past)
	e.Decide(pkt(alice, "udp/8000", 1), far)
	if d := e.Decide(pkt(alice, "tcp/9000", 1), far); d.Reason == ReasonOpened {
		t.Fatal("a sequence begun 584 years earlier completed")
	}
}
