package verdict

import (
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict/fwknop"
)

func TestReloadKeepsStateOfSurvivingDoors(t *testing.T) {
	e, err := NewEngine(testPolicy(), t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range knockSSH(alice, 0, 1000) {
		e.Decide(s.p, t0.Add(s.at))
	}
	e.Decide(pkt(alice, "udp/5000", 1), t0) // web grant
	ks := knockSSH(bob, 0, 2000)
	e.Decide(ks[0].p, t0) // bob mid-sequence on ssh
	e.Decide(ks[1].p, t0)

	// The new policy drops "web", keeps "ssh" unchanged, and grows a door.
	p := testPolicy()
	p.Doors = []Door{p.Doors[0], {
		Name: "new", Sequence: ports("tcp/6000"), SequenceTimeout: time.Second,
		Open: ports("tcp/6001"), OpenFor: time.Second,
	}}
	ended, err := e.Reload(p, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(ended) != 1 || ended[0].Door != "web" || ended[0].Source != alice {
		t.Fatalf("ended = %+v, want alice's web grant", ended)
	}
	now := t0.Add(2 * time.Second)
	if d := e.Decide(pkt(alice, "tcp/22", 9), now); d.Verdict != Accept {
		t.Fatalf("ssh grant lost on reload: %v", d.Reason)
	}
	// A reload never opens a port the old policy protected: see
	// TestReloadNeverUnprotectsAPort.
	if d := e.Decide(pkt(alice, "tcp/8443", 9), now); d.Verdict != Drop || d.Reason != ReasonClosedUntilRestart {
		t.Fatalf("tcp/8443 after web was removed: %v/%v, want drop/closed_until_restart", d.Verdict, d.Reason)
	}
	if d := e.Decide(ks[2].p, now); d.Reason != ReasonOpened {
		t.Fatalf("bob's knock in progress lost on reload: %v", d.Reason)
	}
	if d := e.Decide(pkt(alice, "tcp/6000", 9), now); d.Reason != ReasonOpened {
		t.Fatalf("new door: %v", d.Reason)
	}
}

func TestReloadDropsProgressOfChangedSequence(t *testing.T) {
	e, _ := NewEngine(testPolicy(), t0)
	ks := knockSSH(bob, 0, 2000)
	e.Decide(ks[0].p, t0)
	p := testPolicy()
	p.Doors[0].Sequence = ports("tcp/7000", "udp/8001", "tcp/9000")
	if _, err := e.Reload(p, t0); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.Sources != 0 {
		t.Fatalf("progress of a changed sequence kept: %+v", st)
	}
}

func TestReloadRefusesInvalidPolicyAndKeepsOld(t *testing.T) {
	e, _ := NewEngine(testPolicy(), t0)
	for _, s := range knockSSH(alice, 0, 1000) {
		e.Decide(s.p, t0.Add(s.at))
	}
	bad := testPolicy()
	bad.Doors[1].Open = ports("udp/8000")
	if _, err := e.Reload(bad, t0); err == nil {
		t.Fatal("Reload accepted an invalid policy")
	}
	if d := e.Decide(pkt(alice, "tcp/22", 9), t0.Add(time.Second)); d.Verdict != Accept {
		t.Fatalf("grant lost by a refused reload: %v", d.Reason)
	}
	if got := e.Policy().Doors[1].Open; got[0] != mustPort("tcp/8443") {
		t.Fatalf("policy changed by a refused reload: %v", got)
	}
}

func TestReloadChangesCaps(t *testing.T) {
	e, _ := NewEngine(testPolicy(), t0)
	for i := 0; i < 50; i++ {
		e.Decide(pkt(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), "udp/5000", 1), t0)
	}
	p := testPolicy()
	p.MaxGrants = 10
	ended, err := e.Reload(p, t0)
	if err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.Grants != 10 || st.MaxGrants != 10 || len(ended) != 40 {
		t.Fatalf("after shrinking max_grants: %+v, %d ended", st, len(ended))
	}
}

// A TOTP door with unchanged settings keeps its knocks in progress and
// its used sequences across a reload; a new secret starts afresh.
func TestReloadKeepsTOTPState(t *testing.T) {
	p := totpPolicy()
	cfg := p.Doors[2].TOTP
	now := time.Unix(1_800_000_010, 0)
	seq := cfg.Sequence(cfg.Counter(now), nil)
	knock := func(e *Engine, src netip.Addr, from, to int) Decision {
		var d Decision
		for i := from; i < to; i++ {
			d = e.Decide(Packet{Src: src, Dst: gw, Proto: seq[i].Proto, SrcPort: uint16(100 + i), DstPort: seq[i].Num}, now)
		}
		return d
	}
	e, _ := NewEngine(p, now)
	knock(e, alice, 0, 2)
	// The door moves to another index, with the same settings.
	p2 := p
	p2.Doors = []Door{p.Doors[2], p.Doors[0], p.Doors[1]}
	if _, err := e.Reload(p2, now); err != nil {
		t.Fatal(err)
	}
	if d := knock(e, alice, 2, 4); d.Reason != ReasonOpened || d.Door != 0 {
		t.Fatalf("alice's knocks in progress across the reload: %v door %d", d.Reason, d.Door)
	}
	if _, err := e.Reload(p, now); err != nil {
		t.Fatal(err)
	}
	if d := knock(e, bob, 0, 4); d.Reason != ReasonKnockReplay {
		t.Fatalf("bob replays alice's sequence after a reload: %v", d.Reason)
	}

	knock(e, carol, 0, 2)
	p3 := totpPolicy()
	p3.Doors[2].TOTP = &TOTP{Secret: []byte("another secret, 16+ bytes"), Step: cfg.Step, Length: cfg.Length, Proto: cfg.Proto, Lo: cfg.Lo, Hi: cfg.Hi}
	if _, err := e.Reload(p3, now); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.Sources != 0 {
		t.Fatalf("progress on the old secret's sequence kept: %+v", st)
	}
}

// A decision names its doors as the policy it was decided under numbers
// them: after a reload that swaps the doors, an index kept from before
// points at the other door, and the name does not.
func TestDecisionNamesItsDoorAcrossReload(t *testing.T) {
	e, _ := NewEngine(testPolicy(), t0)
	ks := knockSSH(bob, 0, 2000)
	before := e.Decide(ks[0].p, t0)
	swapped := testPolicy()
	swapped.Doors[0], swapped.Doors[1] = swapped.Doors[1], swapped.Doors[0]
	if _, err := e.Reload(swapped, t0); err != nil {
		t.Fatal(err)
	}
	if before.DoorName != "ssh" {
		t.Fatalf("DoorName before the reload = %q, want ssh", before.DoorName)
	}
	if now := e.Policy().Doors[before.Door].Name; now != "web" {
		t.Fatalf("the test's premise: the old index now names %q, want web", now)
	}
	// bob's sequence in progress moved to the new numbering; a wrong knock
	// breaks it.
	d := e.Decide(pkt(bob, "tcp/9000", 2001), t0.Add(time.Second))
	if d.Reset != 1 || d.ResetName != "ssh" {
		t.Fatalf("after the reload: Reset %d %q, want 1 ssh", d.Reset, d.ResetName)
	}
	if d := e.Decide(pkt(alice, "udp/5000", 1), t0.Add(time.Second)); d.Door != 0 || d.DoorName != "web" {
		t.Fatalf("after the reload: Door %d %q, want 0 web", d.Door, d.DoorName)
	}
}

// A reload that gives a door max_connections limits the grants it already
// has too.
func TestReloadLimitsConnectionsOfLiveGrants(t *testing.T) {
	e, _ := NewEngine(testPolicy(), t0)
	for _, s := range knockSSH(alice, 0, 1000) {
		e.Decide(s.p, t0.Add(s.at))
	}
	p := testPolicy()
	p.Doors[0].MaxConnections = 1
	at := t0.Add(time.Second)
	if _, err := e.Reload(p, at); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(pkt(alice, "tcp/22", 1), at); d.Verdict != Accept || !d.GrantEnded {
		t.Fatalf("first connect after the reload: %+v", d)
	}
	if d := e.Decide(pkt(alice, "tcp/22", 2), at); d.Verdict != Drop {
		t.Fatal("a grant stayed unlimited on a door that now has max_connections = 1")
	}
}

// A reload never stops protecting a port: one that an earlier policy since
// the engine started protected, and the new one does not, stays closed
// (until a restart) instead of getting the unprotected verdict. A 0-byte
// policy or one cut after its first door would otherwise open every
// protected port it no longer names to everyone.
func TestReloadNeverUnprotectsAPort(t *testing.T) {
	e, _ := NewEngine(testPolicy(), t0)
	if got := e.HeldClosed(); len(got) != 0 {
		t.Fatalf("held closed at start: %v", got)
	}
	check := func(when string, want map[string]Reason) {
		t.Helper()
		for port, reason := range want {
			d := e.Decide(pkt(bob, port, 9), t0)
			wantV := Drop
			if reason == ReasonUnprotected {
				wantV = Accept
			}
			if d.Verdict != wantV || d.Reason != reason {
				t.Errorf("%s: %s got %v/%v, want %v/%v", when, port, d.Verdict, d.Reason, wantV, reason)
			}
		}
	}
	cut := testPolicy()
	cut.Doors = cut.Doors[:1] // the policy cut after its first door
	if _, err := e.Reload(cut, t0); err != nil {
		t.Fatal(err)
	}
	check("cut after ssh", map[string]Reason{
		"tcp/22": ReasonNoGrant, "tcp/8443": ReasonClosedUntilRestart, "udp/8443": ReasonClosedUntilRestart, "tcp/80": ReasonUnprotected,
	})
	if got, want := e.HeldClosed(), ports("tcp/8443", "udp/8443"); !slices.Equal(got, want) {
		t.Errorf("HeldClosed after the cut = %v, want %v", got, want)
	}

	empty := testPolicy()
	empty.Doors = nil // a 0-byte policy file
	if _, err := e.Reload(empty, t0); err != nil {
		t.Fatal(err)
	}
	check("no doors", map[string]Reason{
		"tcp/22": ReasonClosedUntilRestart, "tcp/8443": ReasonClosedUntilRestart, "udp/8443": ReasonClosedUntilRestart, "tcp/80": ReasonUnprotected,
	})
	if got, want := e.HeldClosed(), ports("tcp/22", "tcp/8443", "udp/8443"); !slices.Equal(got, want) {
		t.Errorf("HeldClosed with no doors = %v, want %v", got, want)
	}

	// The union is over every policy since the start, not just the last:
	// a port dropped two reloads ago stays closed.
	if _, err := e.Reload(cut, t0); err != nil {
		t.Fatal(err)
	}
	check("cut again", map[string]Reason{"tcp/22": ReasonNoGrant, "tcp/8443": ReasonClosedUntilRestart})

	// A door that comes back protects its ports again, knocks and all.
	if _, err := e.Reload(testPolicy(), t0); err != nil {
		t.Fatal(err)
	}
	check("restored", map[string]Reason{"tcp/22": ReasonNoGrant, "tcp/8443": ReasonNoGrant, "tcp/80": ReasonUnprotected})
	if got := e.HeldClosed(); len(got) != 0 {
		t.Errorf("held closed with every door back: %v", got)
	}

	// A restart starts from its own policy: nothing is held.
	e2, _ := NewEngine(cut, t0)
	check2 := e2.Decide(pkt(bob, "tcp/8443", 9), t0)
	if check2.Verdict != Accept || check2.Reason != ReasonUnprotected {
		t.Errorf("after a restart with the cut policy: %v/%v", check2.Verdict, check2.Reason)
	}
}

// A reload whose caps are unchanged takes the tables over and remaps
// their entries in place; one that changes the caps moves them into new
// tables. Either way, with the doors renumbered (swapped), every grant,
// knock in progress, ban and used SPA packet carries over, and a grant
// of a door that is gone ends.
func TestReloadRemapsInPlaceAndByMoving(t *testing.T) {
	for _, tt := range []struct {
		name                     string
		caps                     func(*Policy)
		takeGrants, takeProgress bool
	}{
		{"same caps, tables taken over", func(*Policy) {}, true, true},
		{"grant cap changed, grants moved", func(p *Policy) { p.MaxGrants = 5000 }, false, true},
		{"knock cap changed, progress moved", func(p *Policy) { p.MaxSources = 5000 }, true, false},
		{"shard count changed, all moved", func(p *Policy) { p.MaxGrants, p.MaxSources, p.MaxReplay = 64, 64, 64 }, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, nas, _ := spaPolicy(t)
			p.MaxSources, p.MaxGrants, p.MaxReplay = 8192, 8192, 8192
			p.Penalty = Penalty{Failures: 1, Within: time.Minute, Ban: time.Hour, MaxSources: 8192}
			e, _ := NewEngine(p, t0)
			const n = 40
			src := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}) }
			for i := range n {
				if i%2 == 0 {
					for _, s := range knockSSH(src(i), 0, 1000) {
						e.Decide(s.p, t0.Add(s.at))
					}
				} else {
					e.Decide(pkt(src(i), "udp/5000", 1), t0)
				}
			}
			e.Decide(knockSSH(bob, 0, 2000)[0].p, t0) // bob mid-sequence on ssh
			e.Decide(pkt(carol, "tcp/9000", 1), t0)   // carol banned by a wrong knock
			spa := spaPacket(t, nas, alice, t0, spaMsg{typ: fwknop.TypeAccess, allow: "198.51.100.10", ports: []string{"tcp/2049"}})
			if d := e.Decide(spa, t0); d.Reason != ReasonOpened {
				t.Fatal(d.Reason)
			}

			// ssh and web swap places, cam goes.
			p2 := p
			p2.Doors = []Door{p.Doors[1], p.Doors[0], p.Doors[2]}
			tt.caps(&p2)
			ended, err := e.Reload(p2, t0.Add(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if g := e.gen.Load(); g.taken.grants != tt.takeGrants || g.taken.progress != tt.takeProgress {
				t.Fatalf("tables taken over: %+v, want grants %v, progress %v", g.taken, tt.takeGrants, tt.takeProgress)
			}
			if len(ended) != 0 {
				t.Errorf("ended: %+v", ended)
			}
			at := t0.Add(2 * time.Second)
			for i := range n {
				port, door := "tcp/22", "ssh"
				if i%2 == 1 {
					port, door = "tcp/8443", "web"
				}
				if d := e.Decide(pkt(src(i), port, 9), at); d.Verdict != Accept || d.DoorName != door {
					t.Fatalf("source %d: %s after the reload: %v %q", i, port, d.Reason, d.DoorName)
				}
			}
			if d := e.Decide(pkt(alice, "tcp/2049", 9), at); d.Verdict != Accept {
				t.Errorf("SPA grant lost: %v", d.Reason)
			}
			if d := e.Decide(knockSSH(bob, 0, 2000)[1].p, at); d.Reason != ReasonKnock || d.DoorName != "ssh" {
				t.Errorf("bob's knock in progress: %v %q", d.Reason, d.DoorName)
			}
			if d := e.Decide(pkt(carol, "tcp/7000", 1), at); d.Reason != ReasonPenalized {
				t.Errorf("carol's ban lost: %v", d.Reason)
			}
			spa.Src = bob
			if d := e.Decide(spa, at); d.Reason != ReasonSPAReplay {
				t.Errorf("used SPA packet forgotten: %v", d.Reason)
			}
			if got := len(e.Grants(at)); got != n+1 {
				t.Errorf("%d grants after the reload, want %d", got, n+1)
			}

			// Now the nas door goes: its grant ends.
			p3 := p2
			p3.Doors = p2.Doors[:2]
			ended, err = e.Reload(p3, at)
			if err != nil {
				t.Fatal(err)
			}
			if len(ended) != 1 || ended[0].Door != "nas" || ended[0].Source != alice {
				t.Errorf("ended = %+v, want alice's nas grant", ended)
			}
		})
	}
}

// heapInuse is the heap in use, after a full collection when gc is set.
func heapInuse(gc bool) uint64 {
	if gc {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// Reloads do not grow memory. With the default caps (SPA and the penalty
// box on, so every table is full size), a reload that allocated every
// table anew left the garbage of a generation or more in the heap
// whenever the collector had not yet run, which the runtime keeps from
// the OS: the daemon's RSS grew with every SIGHUP. The heap right after
// 50 reloads, garbage and all, must stay within 1.5 times the heap after
// start, and so must it once collected (nothing is kept).
func TestReloadsDoNotGrowMemory(t *testing.T) {
	p, _, _ := spaPolicy(t)
	p.MaxSources, p.MaxGrants, p.MaxReplay = DefaultMaxSources, DefaultMaxGrants, DefaultMaxReplay
	p.Penalty = DefaultPenalty
	base := heapInuse(true)
	e, err := NewEngine(p, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range knockSSH(alice, 0, 1000) {
		e.Decide(s.p, t0.Add(s.at))
	}
	start := heapInuse(true) - base
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range 50 {
		if _, err := e.Reload(p, t0.Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	after := heapInuse(false) - base
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	collected := heapInuse(true) - base
	t.Logf("engine heap: %.1f MB after start, %.1f MB right after 50 reloads, %.1f MB once collected; the reloads allocated %.1f MB",
		float64(start)/1e6, float64(after)/1e6, float64(collected)/1e6, float64(ms.TotalAlloc-before.TotalAlloc)/1e6)
	if after > start*3/2 || collected > start*3/2 {
		t.Errorf("50 reloads grew the engine's heap from %.1f MB to %.1f MB (%.1f MB once collected)",
			float64(start)/1e6, float64(after)/1e6, float64(collected)/1e6)
	}
	if d := e.Decide(pkt(alice, "tcp/22", 1), t0.Add(time.Second)); d.Verdict != Accept {
		t.Fatalf("the grant did not survive the reloads: %v", d.Reason)
	}
	runtime.KeepAlive(e)
}
