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

// The engine accepts a step's sequence exactly as long as AcceptedSteps
// says, the window the knock client reports to its user.
func TestTOTPAcceptedStepsIsTheEnginesWindow(t *testing.T) {
	cfg := totpPolicy().Doors[2].TOTP
	c := cfg.Counter(time.Unix(1_800_000_000, 0))
	first, last := cfg.AcceptedSteps(c)
	if first != c || last <= first {
		t.Fatalf("AcceptedSteps(%d) = %d, %d", c, first, last)
	}
	ends := cfg.StepEnds(last)
	for _, tt := range []struct {
		at   time.Time
		want Reason
	}{
		{cfg.StepEnds(first - 1), ReasonOpened}, // the step starts
		{ends.Add(-time.Second), ReasonOpened},  // the window's last second
		{ends, ReasonKnockWrong},                // the window has passed
	} {
		e, _ := NewEngine(totpPolicy(), tt.at)
		if d := knockTOTP(e, cfg, alice, c, tt.at); d.Reason != tt.want {
			t.Errorf("step %d's sequence at %v (window ends %v): %v, want %v", c, tt.at, ends, d.Reason, tt.want)
		}
	}
}
