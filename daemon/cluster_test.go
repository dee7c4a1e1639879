package daemon

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/knockgate/knockgate/cluster"
	"github.com/knockgate/knockgate/metrics"
	"github.com/knockgate/knockgate/rules"
	"github.com/knockgate/knockgate/verdict"
)

// shortDoor is opened for an hour on the first member of TestCluster and
// for a minute on the second, which must refuse the first one's grants.
const shortDoor = `
door "short" {
  sequence = ["udp/9000", "udp/9001"]
  open     = ["tcp/2222"]
  open_for = "%s"
}
`

// startMember starts a daemon on fake queues whose policy has a cluster
// block named name, listening on a free port of 127.0.0.1 and joining
// peers.
func startMember(t *testing.T, name, key, doors string, peers ...netip.AddrPort) *lab {
	t.Helper()
	l := newLab(t)
	l.writePolicy("  unprotected = \"drop\"\n", doors+`
cluster {
  node        = "`+name+`"
  listen      = "127.0.0.1:7946"
  secret_file = "`+key+`"
}
`)
	l.tweak = func(p *rules.Policy) {
		p.Cluster.Listen = netip.MustParseAddrPort("127.0.0.1:0")
		p.Cluster.Peers = peers
	}
	l.start()
	return l
}

// addr is where the member's cluster node listens.
func (l *lab) addr() netip.AddrPort {
	for _, m := range l.d.fleet.Load().node.Members() {
		if m.Self {
			return m.Addr
		}
	}
	l.t.Fatal("no self member")
	return netip.AddrPort{}
}

func (l *lab) ignored(r cluster.Reason) uint64 { return l.d.fleet.Load().node.Stats().Ignored[r] }

func sprintf(format, arg string) string { return fmt.Sprintf(format, arg) }

// A knock on one gateway opens the door on the other, whose status and
// state file say where it was made; a revoke on the other ends it on the
// first; updates for a door a gateway lacks, or longer than its door
// allows, are refused and counted.
func TestCluster(t *testing.T) {
	key := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(key, cluster.FormatKey(cluster.NewKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startMember(t, "gwa", key, twoDoors+sprintf(shortDoor, "1h"))
	b := startMember(t, "gwb", key, sshDoor+sprintf(shortDoor, "1m"), a.addr())
	eventually(t, "both members alive", func() bool {
		return clusterStats(a.d.fleet.Load().node).Members == 2 && clusterStats(b.d.fleet.Load().node).Members == 2
	})

	const src = "198.51.100.7"
	if d := b.qs[0].feed(t, syn(src, 22)); d.Verdict != verdict.Drop {
		t.Fatalf("connect before the knock: %+v", d)
	}
	a.open(src, 7000)
	eventually(t, "knock on a opens b", func() bool {
		return b.qs[0].feed(t, syn(src, 22)).Verdict == verdict.Accept
	})
	st := b.d.Status()
	if st.Cluster == nil || st.Cluster.Node != "gwb" || len(st.Cluster.Members) != 2 ||
		st.Cluster.Members[0].Name != "gwa" || st.Cluster.Members[0].State != "alive" || !st.Cluster.Members[1].Self {
		t.Fatalf("b's cluster status: %+v", st.Cluster)
	}
	if g := st.Doors[0].Grants; len(g) != 1 || g[0].Origin != "gwa" || g[0].Source.String() != src {
		t.Fatalf("b's grants: %+v", st.Doors)
	}
	eventually(t, "b saves a's grant with its origin", func() bool {
		saved, err := loadState(filepath.Join(b.dir, "state.json"))
		return err == nil && len(saved.grants) == 1 && saved.origin[grantID{"ssh", netip.MustParseAddr(src)}] == "gwa"
	})
	if st := a.d.Status(); st.Doors[0].Grants[0].Origin != "gwa" {
		t.Fatalf("a's own grant: %+v", st.Doors[0].Grants)
	}

	// Revoke on b: a's door closes.
	if live, err := b.d.Revoke("ssh", netip.MustParseAddr(src)); !live || err != nil {
		t.Fatalf("revoke on b: %v %v", live, err)
	}
	eventually(t, "revoke on b closes a", func() bool {
		return a.qs[0].feed(t, syn(src, 22)).Verdict == verdict.Drop
	})

	// web is a's alone; short is an hour on a and a minute on b.
	a.open(src, 8000)
	eventually(t, "b ignores a grant for a door it lacks", func() bool { return b.ignored(cluster.ReasonUnknownDoor) > 0 })
	a.open(src, 9000)
	if d := a.qs[0].feed(t, syn(src, 2222)); d.Verdict != verdict.Accept {
		t.Fatalf("a's own short grant: %+v", d)
	}
	eventually(t, "b refuses a grant longer than its door's", func() bool { return b.ignored(cluster.ReasonTooLong) > 0 })
	if d := b.qs[0].feed(t, syn(src, 2222)); d.Verdict != verdict.Drop {
		t.Fatalf("b honours a grant longer than its door: %+v", d)
	}
	if slices.ContainsFunc(b.d.Status().Doors, func(d DoorStatus) bool { return len(d.Grants) > 0 }) {
		t.Fatalf("b holds grants: %+v", b.d.Status().Doors)
	}

	// Ten wrong knocks on a ban the source there (the default penalty
	// box), and on b.
	const bad = "203.0.113.9"
	for range 10 {
		a.qs[0].feed(t, knock(bad, 7001))
	}
	if d := a.qs[0].feed(t, knock(bad, 7000)); d.Reason != verdict.ReasonPenalized {
		t.Fatalf("not banned on a: %+v", d)
	}
	eventually(t, "a's ban reaches b", func() bool {
		return b.qs[0].feed(t, knock(bad, 7000)).Reason == verdict.ReasonPenalized
	})

	if !slices.ContainsFunc(clusterStats(b.d.fleet.Load().node).Updates, func(u metrics.ClusterUpdates) bool {
		return u.Kind == "grant" && u.Direction == "in" && u.N > 0
	}) {
		t.Fatal("b counted no grant in")
	}
}

// A reload keeps the node running on its address, warns that a new
// listen address waits for a restart, and lets the new peers through to
// the port the node still listens on.
func TestClusterReload(t *testing.T) {
	key := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(key, cluster.FormatKey(cluster.NewKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	l := startMember(t, "gwa", key, sshDoor)
	f := l.d.fleet.Load()
	peer := "192.0.2.5"
	if d := l.qs[0].feed(t, knock(peer, 7946)); d.Verdict != verdict.Drop {
		t.Fatalf("a stranger to the cluster port: %+v", d)
	}
	if err := os.WriteFile(l.policy, []byte(settings(l.dir, "  unprotected = \"drop\"\n")+sshDoor+`
cluster {
  node        = "gwa"
  listen      = "127.0.0.1:7947"
  peers       = ["`+peer+`:7946"]
  secret_file = "`+key+`"
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := l.d.Reload("test"); err != nil {
		t.Fatal(err)
	}
	if l.d.fleet.Load() != f || f.node.Stats().Members != 1 {
		t.Fatal("the node did not survive the reload")
	}
	warned := false
	for _, m := range l.logLines("a changed setting takes effect at the next restart") {
		warned = warned || m["setting"] == "cluster listen"
	}
	if !warned {
		t.Fatalf("no warning for the new listen address:\n%s", l.logs.String())
	}
	if d := l.qs[0].feed(t, knock(peer, 7946)); d.Verdict != verdict.Accept || d.Reason != verdict.ReasonClusterPeer {
		t.Fatalf("the new peer to the running port: %+v", d)
	}
	if d := l.qs[0].feed(t, knock(peer, 7947)); d.Verdict != verdict.Drop {
		t.Fatalf("the new peer to the port of the next restart: %+v", d)
	}
}

// Gateways of one cluster differ in their cluster blocks, files and caps,
// never in their doors: only the doors and what decides their packets go
// into the hash peers compare, so identical doors never read as "another
// policy" (a hash of the whole file made every peer differ), and a door
// that differs always does.
func TestPolicyHashCoversWhatPeersShare(t *testing.T) {
	hash := func(gateExtra, doors string) cluster.PolicyHash {
		t.Helper()
		dir := t.TempDir()
		src := settings(dir, gateExtra) + doors
		pol, err := rules.Parse([]byte(src), filepath.Join(dir, "policy.hcl"))
		if err != nil {
			t.Fatal(err)
		}
		return hashShared(pol.Policy)
	}
	base := hash("", twoDoors)
	if h := hash("  queue = 3\n", twoDoors); h != base {
		t.Errorf("another gateway's queue and files change the hash")
	}
	if h := hash("", sshDoor); h == base {
		t.Errorf("a missing door does not change the hash")
	}
	if h := hash("", strings.Replace(twoDoors, `open_for = "1h"`, `open_for = "2h"`, 1)); h == base {
		t.Errorf("a door's open_for does not change the hash")
	}
}
