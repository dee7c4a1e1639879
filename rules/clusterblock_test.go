package rules

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knockgate/knockgate/cluster"
	"github.com/knockgate/knockgate/verdict"
)

// clusterKey writes a cluster key file in dir and returns its path.
func clusterKey(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(path, cluster.FormatKey(cluster.NewKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestClusterBlock(t *testing.T) {
	dir := t.TempDir()
	key := clusterKey(t, dir)
	src := `
gate { unprotected = "drop" }
cluster {
  node        = "gw1"
  listen      = "192.0.2.1:7946"
  peers       = ["192.0.2.2:7946", "[2001:db8::3]:7946"]
  secret_file = "` + key + `"
}
door "ssh" {
  sequence = ["tcp/7000"]
  open     = ["tcp/22"]
}`
	p, err := Parse([]byte(src), filepath.Join(dir, "p.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	cl := p.Cluster
	if cl == nil || cl.Node != "gw1" || cl.Listen != netip.MustParseAddrPort("192.0.2.1:7946") || len(cl.Peers) != 2 || len(cl.Key) != cluster.KeySize {
		t.Fatalf("cluster %+v", cl)
	}
	if p.ClusterPort != 7946 || !slices.Equal(p.ClusterPeers, []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::3")}) {
		t.Fatalf("engine's cluster: %d %v", p.ClusterPort, p.ClusterPeers)
	}
	e, err := verdict.NewEngine(p.Policy, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	peer := verdict.Packet{Src: netip.MustParseAddr("192.0.2.2"), Proto: verdict.UDP, SrcPort: 7946, DstPort: 7946}
	if d := e.Decide(peer, time.Unix(1, 0)); d.Verdict != verdict.Accept {
		t.Fatalf("peer's cluster traffic: %+v", d)
	}

	// The node defaults to the host name; no block is a single gateway.
	defer func(h func() (string, error)) { hostname = h }(hostname)
	hostname = func() (string, error) { return "gw-host", nil }
	p, err = Parse([]byte(`cluster {
  listen      = "192.0.2.1:7946"
  secret_file = "cluster.key"
}`), filepath.Join(dir, "p.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Cluster.Node != "gw-host" || len(p.Cluster.Peers) != 0 {
		t.Fatalf("defaults: %+v", p.Cluster)
	}
	p, err = Parse([]byte(`door "ssh" {
  sequence = ["tcp/7000"]
  open     = ["tcp/22"]
}`), "p.hcl")
	if err != nil || p.Cluster != nil || p.ClusterPort != 0 || p.ClusterPeers != nil {
		t.Fatalf("no block: %+v %v", p.Cluster, err)
	}
}

func TestClusterBlockErrors(t *testing.T) {
	dir := t.TempDir()
	key := clusterKey(t, dir)
	bad := filepath.Join(dir, "bad.key")
	os.WriteFile(bad, []byte("not base64!\n"), 0o600)
	defer func(h func() (string, error)) { hostname = h }(hostname)
	hostname = func() (string, error) { return strings.Repeat("h", cluster.MaxName+1), nil }
	tests := []struct {
		name, src string
		want      []string
	}{
		{"missing key file and bad addresses", `cluster {
  node        = "gw1"
  listen      = "gw1.example:7946"
  peers       = ["192.0.2.2", "192.0.2.3:7946"]
  secret_file = "` + filepath.Join(dir, "missing.key") + `"
}`, []string{
			`t.hcl:3:17: invalid cluster listen address "gw1.example:7946"`,
			`t.hcl:4:18: invalid cluster peer "192.0.2.2"`,
			`t.hcl:5:17: failed to read cluster key`,
		}},
		{"unreadable key, long node", `cluster {
  node        = "` + strings.Repeat("n", cluster.MaxName+1) + `"
  listen      = "192.0.2.1:7946"
  secret_file = "` + bad + `"
}`, []string{
			`t.hcl:2:17: invalid cluster node`,
			`t.hcl:4:17: failed to read cluster key ` + bad + `: cluster key is not base64`,
		}},
		{"host name too long, nothing set", `cluster {
}`, []string{
			`t.hcl:1:1: cluster node cannot default to the host name`,
			`t.hcl:1:1: cluster block lacks listen`,
			`t.hcl:1:1: cluster block lacks secret_file`,
		}},
		{"listen port is a knock port", `cluster {
  node        = "gw1"
  listen      = "192.0.2.1:7000"
  secret_file = "` + key + `"
}
door "ssh" {
  sequence = ["udp/7000"]
  open     = ["tcp/22"]
}`, []string{`t.hcl:3:17: cluster listen port 7000 is also door "ssh"'s sequence port udp/7000`}},
		{"listen port is a protected port", `cluster {
  node        = "gw1"
  listen      = "192.0.2.1:22"
  secret_file = "` + key + `"
}
door "ssh" {
  sequence = ["udp/7000"]
  open     = ["tcp/22"]
}`, []string{`t.hcl:3:17: cluster listen port 22 is also door "ssh"'s open port tcp/22`}},
		{"duplicate block", `cluster {
  node        = "gw1"
  listen      = "192.0.2.1:7946"
  secret_file = "` + key + `"
}
cluster {
}`, []string{`t.hcl:6:1: duplicate cluster block`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src), "t.hcl")
			wantDiags(t, err, tt.want)
		})
	}
}

func TestClusterRestartOnly(t *testing.T) {
	dir := t.TempDir()
	key := clusterKey(t, dir)
	parse := func(listen string, peers string) *Policy {
		t.Helper()
		p, err := Parse([]byte(`cluster {
  node        = "gw1"
  listen      = "`+listen+`"
  peers       = [`+peers+`]
  secret_file = "`+key+`"
}`), "p.hcl")
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	running := parse("192.0.2.1:7946", `"192.0.2.2:7946"`)
	next := parse("192.0.2.1:7947", `"192.0.2.3:7946"`)
	if got := RestartOnlyChanges(running, next); !slices.Equal(got, []string{"cluster listen"}) {
		t.Fatalf("changes: %v", got)
	}
	next.KeepRestartOnly(running)
	if next.Cluster.Listen != running.Cluster.Listen || next.ClusterPort != 7946 ||
		!slices.Equal(next.ClusterPeers, []netip.Addr{netip.MustParseAddr("192.0.2.3")}) {
		t.Fatalf("kept: %+v %d %v", next.Cluster, next.ClusterPort, next.ClusterPeers)
	}
	single, _ := Parse(nil, "p.hcl")
	if got := RestartOnlyChanges(single, running); !slices.Equal(got, []string{"cluster"}) {
		t.Fatalf("added: %v", got)
	}
	running.KeepRestartOnly(single)
	if running.Cluster != nil || running.ClusterPort != 0 {
		t.Fatalf("a cluster added by reload: %+v", running.Cluster)
	}
}
