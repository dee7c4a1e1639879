package cluster

import (
	"fmt"
	"github.com/knockgate/knockgate/internal/logbuf"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// The tests below run real memberlist clusters inside the test process, on
// 127.0.0.1 with ports the kernel picks.

var (
	testKey  = []byte("0123456789abcdef0123456789abcdef")
	loopback = netip.MustParseAddrPort("127.0.0.1:0")
)

type testNode struct {
	*Node
	name    string
	applied *applied
	store   *Store

	mu   sync.Mutex
	prop []time.Duration
}

type nodeOpts struct {
	key    []byte
	bind   netip.AddrPort
	peers  []string
	store  *Store
	now    func() time.Time
	policy PolicyHash
	logger *slog.Logger
}

func startNode(t *testing.T, name string, o nodeOpts) *testNode {
	t.Helper()
	if o.key == nil {
		o.key = testKey
	}
	if !o.bind.IsValid() {
		o.bind = loopback
	}
	tn := &testNode{name: name, applied: &applied{}}
	logger := slog.New(slog.DiscardHandler)
	if o.logger != nil {
		logger = o.logger
	} else if testing.Verbose() && os.Getenv("CLUSTER_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
	}
	n, err := NewNode(Config{
		Name: name, Limits: Limits{Door: doors}, Apply: tn.applied.apply, Store: o.store, Logger: logger,
		Now: o.now, Policy: o.policy,
		OnPropagation: func(_ string, d time.Duration) {
			tn.mu.Lock()
			tn.prop = append(tn.prop, d)
			tn.mu.Unlock()
		},
	}, Memberlist(MemberlistConfig{
		Name: name, Bind: o.bind, Peers: o.peers, Key: o.key, RetryJoin: 200 * time.Millisecond,
		PushPull: 500 * time.Millisecond, Probe: 200 * time.Millisecond, Logger: logger,
	}))
	if err != nil {
		t.Fatal(err)
	}
	tn.Node = n
	t.Cleanup(func() { n.Close() })
	return tn
}

// addr is where the node listens.
func (tn *testNode) addr() netip.AddrPort {
	for _, m := range tn.Members() {
		if m.Self {
			return m.Addr
		}
	}
	panic("no self member")
}

func (tn *testNode) has(g Grant) bool {
	for _, x := range tn.Grants(time.Now()) {
		if x.Door == g.Door && x.Source == g.Source && x.Until.Equal(g.Until) {
			return true
		}
	}
	return false
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func cluster3(t *testing.T) (a, b, c *testNode) {
	a = startNode(t, "gw1", nodeOpts{})
	b = startNode(t, "gw2", nodeOpts{peers: []string{a.addr().String()}})
	c = startNode(t, "gw3", nodeOpts{peers: []string{a.addr().String()}})
	for _, n := range []*testNode{a, b, c} {
		eventually(t, 5*time.Second, n.name+" sees 3 members", func() bool { return n.Stats().Members == 3 })
	}
	return a, b, c
}

func newGrant(src string, d time.Duration) Grant {
	now := time.Now()
	return Grant{Door: "ssh", Source: netip.MustParseAddr(src), Opened: now, Until: now.Add(d), Ports: []verdict.Port{ssh}}
}

func TestClusterGrantAndRevoke(t *testing.T) {
	a, b, c := cluster3(t)
	g := newGrant("198.51.100.7", 30*time.Second)
	start := time.Now()
	if _, err := a.Publish(Update{Grants: []Grant{g}}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*testNode{b, c} {
		eventually(t, 2*time.Second, "grant on "+n.name, func() bool { return n.has(g) })
		n.applied.mu.Lock()
		t.Logf("grant applied on %s %v after publish on gw1", n.name, n.applied.at[0].Sub(start))
		ch := n.applied.chs[0]
		n.applied.mu.Unlock()
		if len(ch.Grants) != 1 || ch.Grants[0].Origin != "gw1" {
			t.Errorf("%s applied %+v", n.name, ch)
		}
	}
	if _, err := c.Publish(Update{Revokes: []Revoke{{Door: "ssh", Source: g.Source, At: time.Now()}}}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*testNode{a, b, c} {
		eventually(t, 2*time.Second, "revoke on "+n.name, func() bool { return !n.has(g) })
	}
	// The revoked grant, sent again (a late duplicate), stays revoked.
	if _, err := a.Publish(Update{Grants: []Grant{g}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	for _, n := range []*testNode{a, b, c} {
		if n.has(g) {
			t.Errorf("revoked grant is back on %s", n.name)
		}
		if skew := n.MaxSkew(); skew > SkewWarn {
			t.Errorf("%s: skew %v within one process", n.name, skew)
		}
	}
	for _, m := range b.Members() {
		if !m.Self && m.Name == "gw1" && m.LastContact.IsZero() {
			t.Errorf("gw2 never heard from gw1: %+v", m)
		}
	}
}

func TestClusterWrongKey(t *testing.T) {
	a := startNode(t, "gw1", nodeOpts{})
	b := startNode(t, "gw2", nodeOpts{peers: []string{a.addr().String()}})
	eventually(t, 5*time.Second, "gw2 joins", func() bool { return a.Stats().Members == 2 })
	evil := startNode(t, "evil", nodeOpts{key: []byte("fedcba9876543210"), peers: []string{a.addr().String(), b.addr().String()}})
	g := newGrant("203.0.113.66", 30*time.Second)
	if _, err := evil.Publish(Update{Grants: []Grant{g}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // several join retries and push/pull rounds
	if m := evil.Stats().Members; m != 1 {
		t.Errorf("node with the wrong key sees %d members", m)
	}
	for _, n := range []*testNode{a, b} {
		if m := n.Stats().Members; m != 2 {
			t.Errorf("%s sees %d members", n.name, m)
		}
		if n.has(g) || n.applied.len() != 0 {
			t.Errorf("%s took a grant from the node with the wrong key", n.name)
		}
	}
}

func TestClusterLateJoinGetsState(t *testing.T) {
	a := startNode(t, "gw1", nodeOpts{})
	b := startNode(t, "gw2", nodeOpts{peers: []string{a.addr().String()}})
	eventually(t, 5*time.Second, "gw2 joins", func() bool { return a.Stats().Members == 2 })
	g := newGrant("192.0.2.44", 30*time.Second)
	ban := Ban{Source: netip.MustParseAddr("192.0.2.66"), Until: time.Now().Add(time.Minute)}
	if _, err := b.Publish(Update{Grants: []Grant{g}, Bans: []Ban{ban}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "grant on gw1", func() bool { return a.has(g) })
	late := startNode(t, "gw3", nodeOpts{peers: []string{a.addr().String()}})
	start := time.Now()
	eventually(t, 3*time.Second, "state on the late node", func() bool {
		s := late.Snapshot(time.Now())
		return late.has(g) && len(s.Bans) == 1
	})
	t.Logf("late node had the full state %v after starting", time.Since(start))
}

// TestClusterPartitionHeals stops gw3's transport (it keeps its state, as
// the daemon keeps its store across a restart), makes grants on both sides
// meanwhile, and starts gw3 again on the same address: both sides end with
// both grants.
func TestClusterPartitionHeals(t *testing.T) {
	a, b, c := cluster3(t)
	addr := c.addr()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "gw3 gone", func() bool { return a.Stats().Members == 2 })
	onA := newGrant("198.51.100.1", 30*time.Second)
	if _, err := a.Publish(Update{Grants: []Grant{onA}}); err != nil {
		t.Fatal(err)
	}
	onC := newGrant("198.51.100.3", 30*time.Second)
	if _, err := c.Publish(Update{Grants: []Grant{onC}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "grant on gw2", func() bool { return b.has(onA) })
	if c.has(onA) || a.has(onC) {
		t.Fatal("a grant crossed the partition")
	}
	kept := NewStore()
	snap := c.Snapshot(time.Now())
	kept.Merge(&snap, time.Now())
	c2 := startNode(t, "gw3", nodeOpts{bind: addr, store: kept, peers: []string{a.addr().String()}})
	start := time.Now()
	for _, n := range []*testNode{a, b, c2} {
		eventually(t, 5*time.Second, "both grants on "+n.name, func() bool { return n.has(onA) && n.has(onC) })
	}
	t.Logf("converged %v after gw3 restarted", time.Since(start))
}

// TestClusterSkewAndPolicy runs gw2 with a clock 2 s ahead and another
// policy: gw1 measures the skew from gw2's messages, warns, and reports
// the policy.
func TestClusterSkewAndPolicy(t *testing.T) {
	var logs logbuf.Buffer
	a := startNode(t, "gw1", nodeOpts{policy: PolicyHash{1}, logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ahead := func() time.Time { return time.Now().Add(2 * time.Second) }
	b := startNode(t, "gw2", nodeOpts{policy: PolicyHash{2}, now: ahead, peers: []string{a.addr().String()}})
	eventually(t, 5*time.Second, "gw2 joins", func() bool { return a.Stats().Members == 2 })
	g := newGrant("192.0.2.80", time.Minute)
	if _, err := b.Publish(Update{Grants: []Grant{g}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "grant on gw1", func() bool { return a.has(g) })
	if skew := a.MaxSkew(); skew < 1900*time.Millisecond || skew > 2100*time.Millisecond {
		t.Errorf("gw1 measures a skew of %v, want about 2s", skew)
	}
	var st MemberStatus
	for _, m := range a.Members() {
		if m.Name == "gw2" {
			st = m
		}
	}
	if !st.PolicyDiffers || st.Policy != (PolicyHash{2}) || st.Skew < time.Second {
		t.Errorf("gw2 as gw1 sees it: %+v", st)
	}
	out := logs.String()
	for _, want := range []string{"clock is off", "another policy", "cluster member joined"} {
		if !strings.Contains(out, want) {
			t.Errorf("gw1's log lacks %q:\n%s", want, out)
		}
	}
}

// TestClusterPropagation sends 1,000 grants from gw1 to gw2 at about
// 1,000/s and reports the delay from publish to merge; every grant
// arrives, directly or by push/pull.
func TestClusterPropagation(t *testing.T) {
	a := startNode(t, "gw1", nodeOpts{})
	b := startNode(t, "gw2", nodeOpts{peers: []string{a.addr().String()}})
	eventually(t, 5*time.Second, "gw2 joins", func() bool { return a.Stats().Members == 2 })
	const n = 1000
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for i := range n {
		<-tick.C
		g := newGrant(fmt.Sprintf("10.%d.%d.1", i>>8, i&0xff), time.Minute)
		if _, err := a.Publish(Update{Grants: []Grant{g}}); err != nil {
			t.Fatal(err)
		}
	}
	sent := time.Since(start)
	eventually(t, 5*time.Second, "all grants on gw2", func() bool { return len(b.Grants(time.Now())) == n })
	b.mu.Lock()
	ds := slices.Clone(b.prop)
	b.mu.Unlock()
	slices.Sort(ds)
	if len(ds) == 0 {
		t.Fatal("no direct update arrived")
	}
	q := func(p float64) time.Duration { return ds[int(p*float64(len(ds)-1))] }
	s := a.Stats()
	t.Logf("%d grants in %v: %d arrived directly, p50 %v, p99 %v, max %v; %d bytes in %d messages out (%d per grant)",
		n, sent.Round(time.Millisecond), len(ds), q(0.5), q(0.99), ds[len(ds)-1], s.BytesOut, s.MessagesOut, s.BytesOut/s.MessagesOut)
}

func TestSlogWriter(t *testing.T) {
	var logs logbuf.Buffer
	l := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	w := slogWriter{l}
	for _, line := range []string{
		"[DEBUG] memberlist: Stream connection from=127.0.0.1:1\n",
		"[WARN] memberlist: Refuting a dead message\n",
		"[ERR] memberlist: failed to decrypt\n",
		"no level at all\n",
	} {
		if n, err := w.Write([]byte(line)); n != len(line) || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	out := logs.String()
	for _, want := range []string{`level=WARN msg="Refuting a dead message" component=memberlist`,
		`level=ERROR msg="failed to decrypt"`, `level=INFO msg="no level at all"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Stream connection") {
		t.Errorf("debug line passed the info level:\n%s", out)
	}
}

func TestNodeNameMustMatchTransport(t *testing.T) {
	_, err := NewNode(Config{Name: "gw1", Limits: Limits{Door: doors}},
		Memberlist(MemberlistConfig{Name: "gw9", Bind: loopback, Key: testKey}))
	if err == nil {
		t.Fatal("a node whose transport uses another name started")
	}
	if _, err := NewNode(Config{Name: "gw1"}, Memberlist(MemberlistConfig{Name: "gw1", Bind: loopback, Key: []byte("short")})); err == nil {
		t.Fatal("a 5-byte key was taken")
	}
}
