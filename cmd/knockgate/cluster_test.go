package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/knockgate/knockgate/daemon"
	"github.com/knockgate/knockgate/rules"
)

// keygen --kind cluster prints a key that a cluster block reads as its
// secret_file.
func TestClusterKeygen(t *testing.T) {
	code, out, errOut := runMain(t, "keygen", "--kind", "cluster")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cluster.key"), []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	policy := "cluster {\n  node = \"gw1\"\n  listen = \"192.0.2.1:7946\"\n  secret_file = \"cluster.key\"\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "p.hcl"), []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := rules.Load(filepath.Join(dir, "p.hcl"))
	if err != nil {
		t.Fatalf("the policy refuses keygen's key: %v", err)
	}
	if got := len(p.Cluster.Key); got != 32 {
		t.Fatalf("key of %d bytes", got)
	}
	if _, again, _ := runMain(t, "keygen", "--kind", "cluster"); again == out {
		t.Fatal("the same key twice")
	}
}

// clusterAnswers is a daemon of a cluster, as status shows it.
type clusterAnswers struct{ daemonAnswers }

func (f *clusterAnswers) Status() *daemon.StatusReport {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := f.daemonAnswers.Status()
	st.Now = now
	st.Doors[0].Grants = append(st.Doors[0].Grants, daemon.GrantStatus{Source: netip.MustParseAddr("198.51.100.8"),
		LeftSeconds: 30, Until: now.Add(30 * time.Second), Origin: "gw2"})
	st.Cluster = &daemon.ClusterStatus{Node: "gw1", Members: []daemon.ClusterMember{
		{Name: "gw1", Addr: "192.0.2.1:7946", State: "alive", Self: true},
		{Name: "gw2", Addr: "192.0.2.2:7946", State: "alive", LastContact: now.Add(-1500 * time.Millisecond), SkewSeconds: 0.002, PolicyDiffers: true},
		{Name: "gw3", Addr: "192.0.2.3:7946", State: "dead"},
	}}
	return st
}

func TestStatusOfACluster(t *testing.T) {
	sock := serveAnswers(t, &clusterAnswers{})
	code, out, errOut := runMain(t, "status", "--socket", sock)
	if code != 0 {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	lines := strings.Split(out, "\n")
	find := func(prefix string) []string {
		for _, l := range lines {
			if f := strings.Fields(l); strings.HasPrefix(strings.Join(f, " "), prefix) {
				return f
			}
		}
		t.Fatalf("no line %q in:\n%s", prefix, out)
		return nil
	}
	if f := find("gw2 "); strings.Join(f, " ") != "gw2 192.0.2.2:7946 alive 1.5s ago 2ms differs" {
		t.Errorf("gw2: %q", f)
	}
	if f := find("gw3 "); strings.Join(f, " ") != "gw3 192.0.2.3:7946 dead never - same" {
		t.Errorf("gw3: %q", f)
	}
	if f := find("ssh 198.51.100.7"); f[len(f)-1] != "gw1" {
		t.Errorf("a local grant's origin: %q", f)
	}
	if f := find("ssh 198.51.100.8"); f[len(f)-1] != "gw2" {
		t.Errorf("a peer's grant's origin: %q", f)
	}
	code, out, _ = runMain(t, "status", "--socket", sock, "--json")
	if code != 0 || !strings.Contains(out, `"cluster": {`) || !strings.Contains(out, `"origin": "gw2"`) || !strings.Contains(out, `"policy_differs": true`) {
		t.Fatalf("status --json: exit %d\n%s", code, out)
	}
}
