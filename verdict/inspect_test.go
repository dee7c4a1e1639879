package verdict

import (
	"testing"
	"time"
)

func TestGrantOf(t *testing.T) {
	e, _ := NewEngine(testPolicy(), t0)
	for _, s := range knockSSH(alice, 0, 1000) {
		e.Decide(s.p, t0.Add(s.at))
	}
	g, ok := e.GrantOf("ssh", alice, t0.Add(time.Second))
	if !ok || g.Door != "ssh" || g.Source != alice || !g.Until.Equal(t0.Add(200*time.Millisecond+30*time.Second)) {
		t.Fatalf("GrantOf = %+v, %v", g, ok)
	}
	for _, tt := range []struct {
		door string
		at   time.Duration
	}{{"web", time.Second}, {"nope", time.Second}, {"ssh", time.Minute}} {
		if g, ok := e.GrantOf(tt.door, alice, t0.Add(tt.at)); ok {
			t.Errorf("GrantOf(%s) at %v = %+v, want none", tt.door, tt.at, g)
		}
	}
}

func TestBansAndUnban(t *testing.T) {
	e, _ := NewEngine(penaltyPolicy(), t0)
	if bs := e.Bans(t0); bs == nil || len(bs) != 0 {
		t.Fatalf("Bans of an empty box = %#v, want empty and not nil", bs)
	}
	for i := range 5 {
		e.Decide(pkt(alice, "tcp/9000", uint16(i)), t0.Add(time.Duration(i)*time.Second))
	}
	e.Decide(pkt(bob, "tcp/9000", 1), t0) // one failure: counted, not banned
	bs := e.Bans(t0.Add(5 * time.Second))
	if len(bs) != 1 || bs[0].Source != alice || !bs[0].Until.Equal(t0.Add(4*time.Second+10*time.Minute)) {
		t.Fatalf("Bans = %+v, want alice's until 10 min after her fifth failure", bs)
	}
	if e.Unban(bob, t0.Add(5*time.Second)) {
		t.Error("Unban of a source not banned reported a ban")
	}
	if !e.Unban(alice, t0.Add(5*time.Second)) {
		t.Fatal("Unban of a banned source reported none")
	}
	if bs := e.Bans(t0.Add(5 * time.Second)); len(bs) != 0 {
		t.Fatalf("Bans after Unban = %+v", bs)
	}
	for _, s := range knockSSH(alice, 6*time.Second, 2000) {
		e.Decide(s.p, t0.Add(s.at))
	}
	if d := e.Decide(pkt(alice, "tcp/22", 1), t0.Add(7*time.Second)); d.Verdict != Accept {
		t.Fatalf("knock after Unban: %+v", d)
	}
}

func TestProgress(t *testing.T) {
	e, _ := NewEngine(testPolicy(), t0)
	if ps := e.Progress(t0); ps == nil || len(ps) != 0 {
		t.Fatalf("Progress with no knocks = %#v, want empty and not nil", ps)
	}
	steps := knockSSH(alice, 0, 1000)
	e.Decide(steps[0].p, t0)
	e.Decide(steps[1].p, t0.Add(steps[1].at))
	ps := e.Progress(t0.Add(time.Second))
	if len(ps) != 1 || ps[0] != (Progress{Door: "ssh", Source: alice, Step: 2, Of: 3, Started: t0}) {
		t.Fatalf("Progress = %+v", ps)
	}
	// The sequence times out after 10 s.
	if ps := e.Progress(t0.Add(11 * time.Second)); len(ps) != 0 {
		t.Fatalf("Progress after the timeout = %+v", ps)
	}
}
