package verdict

import (
	"testing"
	"time"
)

func TestRevoke(t *testing.T) {
	e, _ := NewEngine(testPolicy(), t0)
	for _, s := range knockSSH(alice, 0, 1000) {
		e.Decide(s.p, t0.Add(s.at))
	}
	if live, err := e.Revoke("ssh", alice, t0.Add(time.Second)); err != nil || !live {
		t.Fatalf("Revoke = %v, %v", live, err)
	}
	if d := e.Decide(pkt(alice, "tcp/22", 9), t0.Add(time.Second)); d.Verdict != Drop {
		t.Fatal("grant survived Revoke")
	}
	if live, err := e.Revoke("ssh", alice, t0); err != nil || live {
		t.Fatalf("second Revoke = %v, %v", live, err)
	}
	if _, err := e.Revoke("nope", alice, t0); err == nil {
		t.Fatal("Revoke of an unknown door succeeded")
	}
}
