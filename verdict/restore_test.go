package verdict

import (
	"testing"
	"time"
)

// Grants saved by one engine and restored into another (a restart) keep
// their expiry, by the wall clock.
func TestRestoreAcrossRestart(t *testing.T) {
	e1, _ := NewEngine(testPolicy(), t0)
	for _, s := range knockSSH(alice, 0, 1000) {
		e1.Decide(s.p, t0.Add(s.at))
	}
	e1.Decide(pkt(carol, "udp/5000", 1), t0)
	saved := e1.Grants(t0.Add(10 * time.Second))
	saved = append(saved, Grant{Door: "gone", Source: bob, Until: t0.Add(time.Hour)},
		Grant{Door: "ssh", Source: bob, Until: t0.Add(5 * time.Second)}) // over by restart

	restart := t0.Add(10 * time.Second)
	e2, _ := NewEngine(testPolicy(), restart)
	restored, skipped := e2.Restore(saved, restart)
	if restored != 2 || skipped != 2 {
		t.Fatalf("restored %d, skipped %d; want 2, 2", restored, skipped)
	}
	if d := e2.Decide(pkt(alice, "tcp/22", 9), t0.Add(30*time.Second)); d.Verdict != Accept {
		t.Fatalf("restored grant refused before expiry: %v", d.Reason)
	}
	if d := e2.Decide(pkt(alice, "tcp/22", 9), t0.Add(30*time.Second+200*time.Millisecond)); d.Verdict != Drop {
		t.Fatal("restored grant outlived its expiry")
	}
	if d := e2.Decide(pkt(bob, "tcp/22", 9), restart); d.Verdict != Drop {
		t.Fatal("an expired saved grant was restored")
	}
}

// A saved grant is clipped to the door's current open_for.
func TestRestoreClipsToOpenFor(t *testing.T) {
	e, _ := NewEngine(testPolicy(), t0)
	e.Restore([]Grant{{Door: "ssh", Source: alice, Opened: t0, Until: t0.Add(24 * time.Hour)}}, t0)
	if d := e.Decide(pkt(alice, "tcp/22", 9), t0.Add(31*time.Second)); d.Verdict != Drop {
		t.Fatal("a saved grant outlasted the door's open_for")
	}
}
