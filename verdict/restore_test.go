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

// A max_connections grant comes back from a restart with the connections
// it had left, never unlimited: a saved count of 0 (a state file written
// before counts were saved, or a door that gained max_connections since)
// gets the door's max_connections, and a count above the door's current
// max is clipped to it.
func TestRestoreKeepsConnectionsLeft(t *testing.T) {
	p := testPolicy()
	p.Doors[0].MaxConnections = 3
	e1, _ := NewEngine(p, t0)
	for _, s := range knockSSH(alice, 0, 1000) {
		e1.Decide(s.p, t0.Add(s.at))
	}
	at := t0.Add(time.Second)
	if d := e1.Decide(pkt(alice, "tcp/22", 1), at); d.Verdict != Accept {
		t.Fatalf("first connect: %v", d.Reason)
	}
	saved := e1.Grants(at)
	if len(saved) != 1 || saved[0].ConnsLeft != 2 {
		t.Fatalf("saved: %+v; want one grant with 2 connections left", saved)
	}
	unlimited := testPolicy()
	e0, _ := NewEngine(unlimited, t0)
	for _, s := range knockSSH(alice, 0, 1000) {
		e0.Decide(s.p, t0.Add(s.at))
	}
	if g := e0.Grants(at); len(g) != 1 || g[0].ConnsLeft != 0 {
		t.Fatalf("grant of a door without max_connections: %+v; want ConnsLeft 0", g)
	}

	for _, tt := range []struct {
		name  string
		left  int
		admit int
	}{
		{"saved count", 2, 2},
		{"no count saved", 0, 3},
		{"count above the door's max", 50, 3},
		{"negative count", -1, 3},
	} {
		e2, _ := NewEngine(p, at)
		g := saved[0]
		g.ConnsLeft = tt.left
		if n, _ := e2.Restore([]Grant{g}, at); n != 1 {
			t.Fatalf("%s: not restored", tt.name)
		}
		for i := range tt.admit {
			if d := e2.Decide(pkt(alice, "tcp/22", uint16(10+i)), at); d.Verdict != Accept {
				t.Fatalf("%s: connect %d of %d refused: %v", tt.name, i+1, tt.admit, d.Reason)
			}
		}
		if d := e2.Decide(pkt(alice, "tcp/22", 99), at); d.Verdict != Drop {
			t.Errorf("%s: connect %d admitted, past the %d left", tt.name, tt.admit+1, tt.admit)
		}
	}
}

// An SPA grant whose client asked for a longer time than open_for (fwknop
// -f, up to max_open_for) comes back from a restart with the time it was
// granted, not cut to open_for; but never longer than the door could
// grant.
func TestRestoreKeepsSPAClientTimeout(t *testing.T) {
	p, _, _ := spaPolicy(t) // door "nas": open_for 30s, max_open_for 5m
	now := t0.Add(time.Hour)
	e, _ := NewEngine(p, now)
	gs := []Grant{
		{Door: "nas", Source: alice, Opened: now.Add(-time.Second), Until: now.Add(119 * time.Second)},
		{Door: "nas", Source: bob, Opened: now, Until: now.Add(24 * time.Hour)},
		// The cam door has no max_open_for: open_for (10s) is its longest.
		{Door: "cam", Source: carol, Opened: now, Until: now.Add(time.Minute)},
	}
	if n, _ := e.Restore(gs, now); n != 3 {
		t.Fatalf("restored %d of 3", n)
	}
	if d := e.Decide(pkt(alice, "tcp/2049", 1), now.Add(118*time.Second)); d.Verdict != Accept {
		t.Errorf("an SPA grant with 119s left was cut short on restore: %v", d.Reason)
	}
	if d := e.Decide(pkt(alice, "tcp/2049", 1), now.Add(119*time.Second)); d.Verdict != Drop {
		t.Error("an SPA grant outlived its saved expiry")
	}
	if d := e.Decide(pkt(bob, "tcp/2049", 1), now.Add(5*time.Minute-time.Millisecond)); d.Verdict != Accept {
		t.Errorf("a long saved grant was cut below max_open_for: %v", d.Reason)
	}
	if d := e.Decide(pkt(bob, "tcp/2049", 1), now.Add(5*time.Minute)); d.Verdict != Drop {
		t.Error("a saved grant outlasted the door's max_open_for")
	}
	if d := e.Decide(pkt(carol, "tcp/554", 1), now.Add(10*time.Second)); d.Verdict != Drop {
		t.Error("a saved grant outlasted the open_for of a door without max_open_for")
	}
}
