package verdict

import (
	"testing"
	"time"
)

// A sequence reset tells a timeout from a wrong packet, so the daemon's
// log can say why a knock failed.
func TestResetTimedOut(t *testing.T) {
	e, _ := NewEngine(testPolicy(), t0)
	steps := knockSSH(alice, 0, 1000)
	e.Decide(steps[0].p, t0)
	// The second knock 11 s later: ssh's 10 s timeout has passed.
	if d := e.Decide(steps[1].p, t0.Add(11*time.Second)); d.ResetName != "ssh" || !d.ResetTimedOut {
		t.Fatalf("late knock: %+v, want a reset of ssh by timeout", d)
	}
	e.Decide(steps[0].p, t0.Add(20*time.Second))
	if d := e.Decide(pkt(alice, "tcp/9100", 1), t0.Add(21*time.Second)); d.ResetName != "ssh" || d.ResetTimedOut {
		t.Fatalf("wrong knock: %+v, want a reset of ssh, not by timeout", d)
	}
}
