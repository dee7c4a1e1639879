package verdict

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict/fwknop"
)

func drain(t *testing.T, e *Engine) []SharedEvent {
	t.Helper()
	evs, lost := e.DrainShared(nil)
	if lost != 0 {
		t.Fatalf("%d events lost", lost)
	}
	return evs
}

func TestSharedEventsOfKnocks(t *testing.T) {
	p := totpPolicy()
	p.Penalty = Penalty{Failures: 2, Within: time.Minute, Ban: 10 * time.Minute, MaxSources: 64}
	e, _ := NewEngine(p, t0)
	// Off until ShareEvents: nothing recorded.
	for _, s := range knockSSH(alice, 0, 1000) {
		e.Decide(s.p, t0.Add(s.at))
	}
	if evs := drain(t, e); len(evs) != 0 {
		t.Fatalf("recorded while off: %+v", evs)
	}
	ready := e.ShareEvents(16)
	for _, s := range knockSSH(alice, time.Second, 1000) {
		e.Decide(s.p, t0.Add(s.at))
	}
	select {
	case <-ready:
	default:
		t.Fatal("no wake-up after a grant")
	}
	evs := drain(t, e)
	if len(evs) != 1 || evs[0].Kind != SharedGrant || evs[0].Door != "ssh" || evs[0].Source != alice || evs[0].Ports != nil ||
		!evs[0].At.Equal(t0.Add(1200*time.Millisecond)) || !evs[0].Until.Equal(t0.Add(1200*time.Millisecond+30*time.Second)) {
		t.Fatalf("grant event: %+v", evs)
	}
	// Close sequence: a revoke at its time.
	e.Decide(pkt(alice, "tcp/9100", 1), t0.Add(2*time.Second))
	e.Decide(pkt(alice, "tcp/9200", 1), t0.Add(2100*time.Millisecond))
	if evs := drain(t, e); len(evs) != 1 || evs[0].Kind != SharedRevoke || evs[0].Door != "ssh" || !evs[0].At.Equal(t0.Add(2100*time.Millisecond)) {
		t.Fatalf("revoke event: %+v", evs)
	}
	// TOTP: the step used, then the grant.
	now := t0.Add(3 * time.Second)
	cfg := p.Doors[2].TOTP
	c := cfg.Counter(now)
	if d := knockTOTP(e, cfg, bob, c, now); d.Reason != ReasonOpened {
		t.Fatalf("totp: %+v", d)
	}
	evs = drain(t, e)
	_, last := cfg.AcceptedSteps(c)
	if len(evs) != 2 || evs[0].Kind != SharedTOTP || evs[0].Step != c || evs[0].Source != bob || !evs[0].Until.Equal(cfg.StepEnds(last)) ||
		evs[1].Kind != SharedGrant || evs[1].Door != "otp" {
		t.Fatalf("totp events: %+v", evs)
	}
	// Two wrong knocks: a ban.
	e.Decide(pkt(carol, "tcp/9000", 1), now)
	e.Decide(pkt(carol, "tcp/9000", 2), now)
	if evs := drain(t, e); len(evs) != 1 || evs[0].Kind != SharedBan || evs[0].Source != carol || !evs[0].Until.Equal(now.Add(10*time.Minute)) {
		t.Fatalf("ban event: %+v", evs)
	}
}

func TestSharedRingIsBounded(t *testing.T) {
	e, _ := NewEngine(testPolicy(), t0)
	e.ShareEvents(2)
	for i := range 5 {
		e.Decide(pkt(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), "udp/5000", 1), t0)
	}
	// web's allow_from lets none of 203.0.113.0/24 in; use ssh knocks.
	for i := range 5 {
		for _, s := range knockSSH(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 0, 1000) {
			e.Decide(s.p, t0.Add(s.at))
		}
	}
	evs, lost := e.DrainShared(nil)
	if len(evs) != 2 || lost != 3 {
		t.Fatalf("%d events, %d lost; want 2 and 3", len(evs), lost)
	}
	if evs, lost := e.DrainShared(nil); len(evs) != 0 || lost != 0 {
		t.Fatalf("after drain: %d, %d", len(evs), lost)
	}
}

func TestSharedEventsOfSPA(t *testing.T) {
	p, nasKeys, _ := spaPolicy(t)
	e, _ := NewEngine(p, t0)
	e.ShareEvents(16)
	pk := spaPacket(t, nasKeys, alice, t0, spaMsg{typ: fwknop.TypeTimeoutAccess, allow: alice.String(), ports: []string{"tcp/443"}, timeout: 120})
	if d := e.Decide(pk, t0); d.Reason != ReasonOpened {
		t.Fatalf("spa: %+v", d)
	}
	evs := drain(t, e)
	if len(evs) != 2 || evs[0].Kind != SharedReplay || evs[1].Kind != SharedGrant {
		t.Fatalf("spa events: %+v", evs)
	}
	sum := fwknop.ReplayKey(pk.Payload)
	var want [20]byte
	copy(want[:], sum[:])
	if evs[0].Digest != want {
		t.Fatal("replay digest is not the packet's")
	}
	if g := evs[1]; g.Door != "nas" || len(g.Ports) != 1 || g.Ports[0] != mustPort("tcp/443") || g.Until.Sub(g.At) != 120*time.Second {
		t.Fatalf("spa grant: %+v", g)
	}
	// Another gateway's engine learns the digest: the packet is a replay there.
	e2, _ := NewEngine(p, t0)
	e2.AddReplay(evs[0].Digest, evs[0].Until, t0)
	if d := e2.Decide(pk, t0.Add(time.Second)); d.Reason != ReasonSPAReplay {
		t.Fatalf("replayed after AddReplay: %+v", d)
	}
}

func TestApplyGrant(t *testing.T) {
	p, _, _ := spaPolicy(t)
	e, _ := NewEngine(p, t0)
	e.ShareEvents(16)
	tests := []struct {
		name          string
		door          string
		ports         []Port
		opened, until time.Duration
		err           error
	}{
		{"unknown door", "nope", nil, 0, time.Second, ErrUnknownDoor},
		{"longer than open_for", "ssh", nil, 0, 31 * time.Second, ErrTooLong},
		{"spa max_open_for", "nas", ports("tcp/443"), 0, 6 * time.Minute, ErrTooLong},
		{"port the door lacks", "nas", ports("tcp/22"), 0, time.Second, ErrNoPorts},
		{"ok", "nas", ports("tcp/443"), 0, 5 * time.Minute, nil},
	}
	for _, tc := range tests {
		err := e.ApplyGrant(tc.door, alice, tc.ports, t0.Add(tc.opened), t0.Add(tc.until), t0)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.err)
		}
	}
	if d := e.Decide(pkt(alice, "tcp/443", 1), t0.Add(4*time.Minute)); d.Verdict != Accept {
		t.Fatalf("applied grant refuses: %+v", d)
	}
	if d := e.Decide(pkt(alice, "tcp/2049", 1), t0.Add(time.Minute)); d.Verdict != Drop {
		t.Fatalf("applied grant covers a port it lacks: %+v", d)
	}
	if d := e.Decide(pkt(alice, "tcp/443", 1), t0.Add(5*time.Minute)); d.Verdict != Drop {
		t.Fatalf("applied grant outlives its end: %+v", d)
	}
	if evs := drain(t, e); len(evs) != 0 {
		t.Fatalf("an import was recorded for the cluster: %+v", evs)
	}
	gs := e.Grants(t0)
	if len(gs) != 1 || !gs[0].Opened.Equal(t0) || !gs[0].Until.Equal(t0.Add(5*time.Minute)) {
		t.Fatalf("grants: %+v", gs)
	}
}

func TestRevokeAt(t *testing.T) {
	e, _ := NewEngine(testPolicy(), t0)
	if err := e.ApplyGrant("ssh", alice, nil, t0.Add(10*time.Second), t0.Add(40*time.Second), t0.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	// A revoke made before the grant opened does not beat it.
	if dropped, err := e.RevokeAt("ssh", alice, t0.Add(5*time.Second), t0.Add(11*time.Second)); dropped || err != nil {
		t.Fatalf("earlier revoke: %v %v", dropped, err)
	}
	if d := e.Decide(pkt(alice, "tcp/22", 1), t0.Add(12*time.Second)); d.Verdict != Accept {
		t.Fatalf("grant gone: %+v", d)
	}
	if dropped, err := e.RevokeAt("ssh", alice, t0.Add(10*time.Second), t0.Add(13*time.Second)); !dropped || err != nil {
		t.Fatalf("revoke at the opening: %v %v", dropped, err)
	}
	if d := e.Decide(pkt(alice, "tcp/22", 1), t0.Add(14*time.Second)); d.Verdict != Drop {
		t.Fatalf("grant survives: %+v", d)
	}
	if _, err := e.RevokeAt("nope", alice, t0, t0); !errors.Is(err, ErrUnknownDoor) {
		t.Fatalf("unknown door: %v", err)
	}
}

func TestMarkTOTPUsed(t *testing.T) {
	p := totpPolicy()
	e, _ := NewEngine(p, t0)
	cfg := p.Doors[2].TOTP
	now := t0.Add(time.Second)
	c := cfg.Counter(now)
	if ok, err := e.MarkTOTPUsed("otp", c, alice); !ok || err != nil {
		t.Fatalf("mark: %v %v", ok, err)
	}
	if d := knockTOTP(e, cfg, bob, c, now); d.Reason != ReasonKnockReplay {
		t.Fatalf("another source with a used step: %+v", d)
	}
	if d := knockTOTP(e, cfg, alice, c, now.Add(time.Second)); d.Reason != ReasonOpened {
		t.Fatalf("the source that used it: %+v", d)
	}
	if ok, _ := e.MarkTOTPUsed("otp", c, bob); ok {
		t.Fatal("a second source took a held step")
	}
	if _, err := e.MarkTOTPUsed("ssh", c, alice); !errors.Is(err, ErrUnknownDoor) {
		t.Fatalf("not a TOTP door: %v", err)
	}
}

func TestBan(t *testing.T) {
	p := penaltyPolicy()
	p.Penalty.MaxSources = 1
	e, _ := NewEngine(p, t0)
	if !e.Ban(alice, t0.Add(time.Minute), t0) {
		t.Fatal("ban refused")
	}
	if d := e.Decide(pkt(alice, "tcp/7000", 1), t0.Add(time.Second)); d.Reason != ReasonPenalized {
		t.Fatalf("banned source knocks: %+v", d)
	}
	// An earlier end leaves the later one.
	e.Ban(alice, t0.Add(10*time.Second), t0)
	if d := e.Decide(pkt(alice, "tcp/7000", 1), t0.Add(30*time.Second)); d.Reason != ReasonPenalized {
		t.Fatalf("ban shortened: %+v", d)
	}
	// The table is full with a live ban: another never evicts it.
	if e.Ban(bob, t0.Add(time.Hour), t0.Add(30*time.Second)) {
		t.Fatal("a ban evicted a live one")
	}
	if d := e.Decide(pkt(alice, "tcp/7000", 1), t0.Add(40*time.Second)); d.Reason != ReasonPenalized {
		t.Fatalf("live ban evicted: %+v", d)
	}
	// Once it ended, its room is free.
	if !e.Ban(bob, t0.Add(time.Hour), t0.Add(2*time.Minute)) {
		t.Fatal("an ended ban kept its room")
	}
	off, _ := NewEngine(testPolicy(), t0)
	if off.Ban(alice, t0.Add(time.Minute), t0) {
		t.Fatal("ban with the penalty box off")
	}
}

func TestClusterPeerAccepted(t *testing.T) {
	p := testPolicy()
	p.Unprotected = Drop
	peer := netip.MustParseAddr("192.0.2.2")
	p.ClusterPort, p.ClusterPeers = 7946, []netip.Addr{peer}
	e, err := NewEngine(p, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"tcp/7946", "udp/7946"} {
		if d := e.Decide(pkt(peer, port, 7946), t0); d.Verdict != Accept || d.Reason != ReasonClusterPeer {
			t.Errorf("peer to %s: %+v", port, d)
		}
		if d := e.Decide(pkt(alice, port, 7946), t0); d.Verdict != Drop || d.Reason != ReasonUnprotected {
			t.Errorf("stranger to %s: %+v", port, d)
		}
	}
	if d := e.Decide(pkt(peer, "tcp/80", 1), t0); d.Verdict != Drop {
		t.Errorf("peer elsewhere: %+v", d)
	}
	if n := testing.AllocsPerRun(1000, func() { e.Decide(pkt(peer, "udp/7946", 1), t0) }); n != 0 {
		t.Errorf("%v allocations per cluster packet", n)
	}
	p.ClusterPort = 22
	if _, err := NewEngine(p, t0); err == nil {
		t.Error("cluster port on a protected port accepted")
	}
}

func TestSharingDoesNotAllocate(t *testing.T) {
	p := testPolicy()
	p.MaxSources = 1024
	e, _ := NewEngine(p, t0)
	e.ShareEvents(4)
	knock := knockSSH(carol, 0, 1000)
	n := testing.AllocsPerRun(2000, func() {
		for _, s := range knock {
			e.Decide(s.p, t0.Add(s.at))
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per knock with sharing on", n)
	}
}

// BenchmarkDecideSharing compares Decide with a cluster's event ring off
// and on (drained as the daemon drains it) on the worst case for it: the
// mix of BenchmarkDecide, and knocks that each open a grant, so that every
// packet records an event.
func BenchmarkDecideSharing(b *testing.B) {
	for _, mix := range []string{"decide", "opens"} {
		for _, on := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/sharing=%v", mix, on), func(b *testing.B) {
				e, pkts, now := decideBench(b, 100, 1000)
				if mix == "opens" {
					p := testPolicy()
					p.Doors[1].AllowFrom = nil // web: one knock, udp/5000
					p.MaxGrants = 1 << 16
					e, _ = NewEngine(p, t0)
					for i := range pkts {
						pkts[i] = pkt(srcN(i), "udp/5000", 1)
					}
				}
				if on {
					ready := e.ShareEvents(4096)
					done := make(chan struct{})
					defer close(done)
					go func() {
						var evs []SharedEvent
						for {
							select {
							case <-done:
								return
							case <-ready:
								evs, _ = e.DrainShared(evs[:0])
							}
						}
					}()
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					e.Decide(pkts[i&4095], now)
				}
			})
		}
	}
}
