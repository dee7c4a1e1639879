package cluster

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

var (
	ssh   = verdict.Port{Proto: verdict.TCP, Num: 22}
	https = verdict.Port{Proto: verdict.TCP, Num: 443}
	dns   = verdict.Port{Proto: verdict.UDP, Num: 53}
)

// gen draws facts from a small universe, so that random updates collide:
// the same door and source, the same opening from two gateways, revokes
// before and after openings.
type gen struct{ r *rand.Rand }

func (g gen) at(lo, hi int) time.Time {
	return t0.Add(time.Duration(lo+g.r.IntN(hi-lo)) * time.Second)
}

func (g gen) src() netip.Addr {
	return []netip.Addr{
		netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::1"),
	}[g.r.IntN(3)]
}

func (g gen) door() string { return []string{"ssh", "web"}[g.r.IntN(2)] }

func (g gen) ports() []verdict.Port {
	all := []verdict.Port{ssh, https, dns}
	var ps []verdict.Port
	for _, p := range all {
		if g.r.IntN(2) == 0 {
			ps = append(ps, p)
		}
	}
	return SortPorts(ps)
}

func (g gen) update() Update {
	var u Update
	for range g.r.IntN(4) {
		opened := g.at(-10, 5)
		u.Grants = append(u.Grants, Grant{Door: g.door(), Source: g.src(), Ports: g.ports(),
			Opened: opened, Until: opened.Add(time.Duration(1+g.r.IntN(20)) * time.Second),
			Origin: []string{"gw1", "gw2", "gw3"}[g.r.IntN(3)]})
	}
	for range g.r.IntN(2) {
		at := g.at(-10, 5)
		u.Revokes = append(u.Revokes, Revoke{Door: g.door(), Source: g.src(), At: at, Until: at.Add(30 * time.Second)})
	}
	for range g.r.IntN(2) {
		u.Replays = append(u.Replays, Replay{Digest: [20]byte{byte(g.r.IntN(3))}, Until: g.at(-2, 30)})
	}
	for range g.r.IntN(2) {
		u.TOTP = append(u.TOTP, TOTPUse{Door: g.door(), Step: uint64(g.r.IntN(2)), Source: g.src(), Until: g.at(-2, 30)})
	}
	for range g.r.IntN(2) {
		u.Bans = append(u.Bans, Ban{Source: g.src(), Until: g.at(-2, 30)})
	}
	return u
}

// canonical is a Store's state in a comparable order.
func canonical(s *Store) Update {
	u := s.Snapshot(t0)
	slices.SortFunc(u.Grants, func(a, b Grant) int {
		return cmp.Or(cmp.Compare(a.Door, b.Door), a.Source.Compare(b.Source), a.Opened.Compare(b.Opened), cmp.Compare(a.Origin, b.Origin))
	})
	slices.SortFunc(u.Revokes, func(a, b Revoke) int { return cmp.Or(cmp.Compare(a.Door, b.Door), a.Source.Compare(b.Source)) })
	slices.SortFunc(u.Replays, func(a, b Replay) int { return slices.Compare(a.Digest[:], b.Digest[:]) })
	slices.SortFunc(u.TOTP, func(a, b TOTPUse) int {
		return cmp.Or(cmp.Compare(a.Door, b.Door), cmp.Compare(a.Step, b.Step), a.Source.Compare(b.Source))
	})
	slices.SortFunc(u.Bans, func(a, b Ban) int { return a.Source.Compare(b.Source) })
	return u
}

func mergeAll(us []Update) *Store {
	s := NewStore()
	for i := range us {
		s.Merge(&us[i], t0)
	}
	return s
}

func join(a, b Update) Update {
	return Update{
		Grants:  append(slices.Clone(a.Grants), b.Grants...),
		Revokes: append(slices.Clone(a.Revokes), b.Revokes...),
		Replays: append(slices.Clone(a.Replays), b.Replays...),
		TOTP:    append(slices.Clone(a.TOTP), b.TOTP...),
		Bans:    append(slices.Clone(a.Bans), b.Bans...),
	}
}

func sameState(t *testing.T, what string, a, b *Store) {
	t.Helper()
	if ca, cb := canonical(a), canonical(b); !reflect.DeepEqual(ca, cb) {
		t.Fatalf("%s: states differ:\n%+v\n%+v", what, ca, cb)
	}
}

func TestMergeLaws(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(1, 2))}
	for i := range 2000 {
		a, b, c := g.update(), g.update(), g.update()
		sameState(t, fmt.Sprint("commutative #", i), mergeAll([]Update{a, b}), mergeAll([]Update{b, a}))
		sameState(t, fmt.Sprint("associative #", i), mergeAll([]Update{a, b, c}), mergeAll([]Update{a, join(b, c)}))
		sameState(t, fmt.Sprint("associative #", i), mergeAll([]Update{a, b, c}), mergeAll([]Update{join(a, b), c}))
		sameState(t, fmt.Sprint("idempotent #", i), mergeAll([]Update{a, b}), mergeAll([]Update{a, b, a, b}))
	}
}

// TestMergeConverges merges the same random updates in random orders, with
// duplicates, into stores that also exchange full snapshots along the way,
// as push/pull does: every store ends in the same state.
func TestMergeConverges(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(3, 4))}
	for round := range 200 {
		us := make([]Update, 2+g.r.IntN(12))
		for i := range us {
			us[i] = g.update()
		}
		want := mergeAll(us)
		for replica := range 4 {
			s := NewStore()
			order := g.r.Perm(len(us))
			for range g.r.IntN(len(us)) {
				order = append(order, g.r.IntN(len(us)))
			}
			g.r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			half := NewStore()
			for k, i := range order {
				s.Merge(&us[i], t0)
				if k%2 == 0 {
					half.Merge(&us[i], t0)
				}
			}
			snap := half.Snapshot(t0)
			s.Merge(&snap, t0)
			sameState(t, fmt.Sprintf("round %d replica %d", round, replica), want, s)
		}
	}
}

// TestChangesTrackEffective applies every merge's Changes to a model of
// the engine, as the daemon will, and checks that the model always holds
// the Store's effective grants.
func TestChangesTrackEffective(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(5, 6))}
	for round := range 300 {
		s := NewStore()
		model := map[grantKey]Grant{}
		for step := range 10 {
			u := g.update()
			ch := s.Merge(&u, t0)
			for _, r := range ch.Revokes {
				k := grantKey{r.Door, r.Source}
				if m, ok := model[k]; ok && !m.Opened.After(r.At) {
					delete(model, k)
				}
			}
			for _, gr := range ch.Grants {
				model[grantKey{gr.Door, gr.Source}] = gr
			}
			want := map[grantKey]Grant{}
			for _, gr := range s.Grants(t0) {
				want[grantKey{gr.Door, gr.Source}] = gr
			}
			for k, m := range model {
				if !m.Until.After(t0) {
					delete(model, k)
				}
			}
			if !reflect.DeepEqual(model, want) {
				t.Fatalf("round %d step %d: engine model\n%+v\nstore\n%+v", round, step, model, want)
			}
		}
	}
}

func TestRevokeBeatsEarlierGrantsOnly(t *testing.T) {
	src := netip.MustParseAddr("192.0.2.7")
	s := NewStore()
	early := Grant{Door: "ssh", Source: src, Opened: t0.Add(-5 * time.Second), Until: t0.Add(time.Minute), Origin: "gw1", Ports: []verdict.Port{ssh}}
	late := Grant{Door: "ssh", Source: src, Opened: t0.Add(time.Second), Until: t0.Add(30 * time.Second), Origin: "gw2", Ports: []verdict.Port{https}}
	rev := Revoke{Door: "ssh", Source: src, At: t0, Until: t0.Add(2 * time.Minute)}

	ch := s.Merge(&Update{Grants: []Grant{early}}, t0)
	if len(ch.Grants) != 1 || !ch.Grants[0].Until.Equal(early.Until) {
		t.Fatalf("first grant: changes %+v", ch)
	}
	ch = s.Merge(&Update{Revokes: []Revoke{rev}}, t0)
	if len(ch.Revokes) != 1 || len(ch.Grants) != 0 || len(s.Grants(t0)) != 0 {
		t.Fatalf("revoke: changes %+v, grants %+v", ch, s.Grants(t0))
	}
	// The revoked grant sent again (a late or duplicated message) stays
	// revoked; a grant opened after the revoke lives, alone.
	ch = s.Merge(&Update{Grants: []Grant{early, late}}, t0)
	gs := s.Grants(t0)
	if len(ch.Grants) != 1 || len(gs) != 1 || !slices.Equal(gs[0].Ports, []verdict.Port{https}) || gs[0].Origin != "gw2" {
		t.Fatalf("after revoke: changes %+v, grants %+v", ch, gs)
	}
	// Once the tombstone has expired (past every grant it beat), Expire
	// drops it.
	if n := s.Expire(t0.Add(3 * time.Minute)); n != 2 || s.Len() != 0 {
		t.Fatalf("expire dropped %d, %d left", n, s.Len())
	}
}

func TestGrantJoin(t *testing.T) {
	src := netip.MustParseAddr("2001:db8::9")
	s := NewStore()
	a := Grant{Door: "web", Source: src, Opened: t0, Until: t0.Add(10 * time.Second), Origin: "gw1", Ports: []verdict.Port{https}}
	b := a
	b.Until, b.Ports = t0.Add(20*time.Second), []verdict.Port{ssh}
	c := Grant{Door: "web", Source: src, Opened: t0.Add(time.Second), Until: t0.Add(15 * time.Second), Origin: "gw2", Ports: nil}
	s.Merge(&Update{Grants: []Grant{a}}, t0)
	ch := s.Merge(&Update{Grants: []Grant{b}}, t0)
	if len(ch.Grants) != 1 || !slices.Equal(ch.Grants[0].Ports, []verdict.Port{ssh, https}) || !ch.Grants[0].Until.Equal(b.Until) {
		t.Fatalf("later expiry and port union: %+v", ch)
	}
	if ch := s.Merge(&Update{Grants: []Grant{a, b}}, t0); !ch.Empty() {
		t.Fatalf("merging known grants changed %+v", ch)
	}
	ch = s.Merge(&Update{Grants: []Grant{c}}, t0)
	if len(ch.Grants) != 1 || ch.Grants[0].Ports != nil || !ch.Grants[0].Opened.Equal(t0) || ch.Grants[0].Origin != "gw1" {
		t.Fatalf("a knock grant (all ports) joins to all ports: %+v", ch)
	}
}

func TestExpiredFactsIgnored(t *testing.T) {
	s := NewStore()
	src := netip.MustParseAddr("192.0.2.1")
	u := Update{
		Grants:  []Grant{{Door: "ssh", Source: src, Opened: t0.Add(-time.Minute), Until: t0, Origin: "gw1"}},
		Replays: []Replay{{Until: t0}},
		Bans:    []Ban{{Source: src, Until: t0.Add(-time.Second)}},
	}
	if ch := s.Merge(&u, t0); !ch.Empty() || s.Len() != 0 {
		t.Fatalf("expired facts merged: %+v, %d stored", ch, s.Len())
	}
}

// BenchmarkStorePerGrant reports the time and allocations of merging one
// grant (distinct sources, one door, two ports) and, as B/grant, the heap
// that 10,000 live grants hold once merged.
func BenchmarkStorePerGrant(b *testing.B) {
	b.ReportAllocs()
	ports := []verdict.Port{ssh, https}
	// Names are new strings each time, as DecodeMessage makes them.
	grant := func(i int) *Update {
		return &Update{Grants: []Grant{{Door: string([]byte("ssh")), Source: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
			Opened: t0, Until: t0.Add(time.Hour), Origin: string([]byte("gw1")), Ports: ports}}}
	}
	s := NewStore()
	for i := range b.N {
		s.Merge(grant(i), t0)
	}
	b.StopTimer()
	const n = 10_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s = NewStore()
	for i := range n {
		s.Merge(grant(i), t0)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/grant")
	runtime.KeepAlive(s)
}

// TestExpiredTombstoneIsGone: a tombstone past its Until acts as absent
// whether or not Expire has dropped it yet, or gateways that swept at
// different moments would merge the same facts differently.
func TestExpiredTombstoneIsGone(t *testing.T) {
	src := netip.MustParseAddr("192.0.2.3")
	old := Revoke{Door: "ssh", Source: src, At: t0.Add(5 * time.Second), Until: t0.Add(10 * time.Second)}
	later := t0.Add(20 * time.Second)
	// Opened before the old tombstone's At, after the new one's.
	g := Grant{Door: "ssh", Source: src, Opened: t0.Add(3 * time.Second), Until: later.Add(time.Minute), Origin: "gw1"}
	for name, u := range map[string]Update{
		"grant alone":      {Grants: []Grant{g}},
		"grant and revoke": {Grants: []Grant{g}, Revokes: []Revoke{{Door: "ssh", Source: src, At: t0.Add(2 * time.Second), Until: later.Add(time.Minute)}}},
	} {
		swept, unswept := NewStore(), NewStore()
		for _, s := range []*Store{swept, unswept} {
			s.Merge(&Update{Revokes: []Revoke{old}}, t0)
		}
		swept.Expire(later)
		swept.Merge(&u, later)
		unswept.Merge(&u, later)
		a, b := swept.Snapshot(later), unswept.Snapshot(later)
		if !reflect.DeepEqual(a.Revokes, b.Revokes) || len(a.Grants) != 1 || len(b.Grants) != 1 {
			t.Errorf("%s: swept %+v\nunswept %+v", name, a, b)
		}
	}
}
