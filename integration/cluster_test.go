//go:build integration

package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/knockgate/knockgate/internal/netns"
)

// fleet is a set of gateways that share their doors over a cluster link:
//
//	c1 (203.0.113.10) ─┐          ┌─ gw1 (203.0.113.1) ─┐
//	c2 (203.0.113.20) ─┴── wan ───┼─ gw2 (203.0.113.2) ─┼── sync (198.51.100.0/24)
//	                              └─ gw3 (203.0.113.3) ─┘
//
// wan and sync are namespaces holding a bridge each. The clients keep one
// address whichever gateway they talk to, as behind ECMP or a virtual
// address, so a grant made on one gateway is for the same source on all.
// Each gateway runs the real binary with its own policy, state file,
// control socket and log (a lab of its own, whose "gw" namespace is the
// gateway), loaded with the steering rules `knockgate rules --config`
// prints for that policy.
type fleet struct {
	t   *testing.T
	net *lab // the shared namespaces: clients, wan and sync
	gws []*gateway
	key string // the fleet's key file
	spa spaKeys
}

type gateway struct {
	*lab
	name      string
	wan, sync netip.Addr
	key       string // its cluster key file
	keepalive *exec.Cmd
}

var (
	fleetC1  = netip.MustParseAddr("203.0.113.10")
	fleetC2  = netip.MustParseAddr("203.0.113.20")
	fleetVIP = netip.MustParsePrefix("203.0.113.100/24")
)

const clusterPort = 7946

// fleetDoors are the doors every gateway of the fleet has: a knock door
// with a grant long enough to outlive a restart, a stock-fwknop SPA door
// with a short one, and a TOTP door.
const fleetDoors = `
door "ssh" {
  sequence         = ["tcp/7000", "udp/8000", "tcp/9000"]
  sequence_timeout = "5s"
  open             = ["tcp/22"]
  open_for         = "20s"
}

door "nas" {
  spa {
    port            = "udp/62201"
    key_base64      = %q
    hmac_key_base64 = %q
  }
  open     = ["tcp/2222"]
  open_for = "3s"
}

door "otp" {
  totp {
    secret_base64 = %q
    step          = "30s"
    length        = 4
    ports         = "udp/40000-40999"
  }
  open     = ["tcp/443"]
  open_for = "30s"
}
`

// newFleet builds n gateways with the fleet's key; they are not started.
func newFleet(t *testing.T, n int) *fleet {
	t.Helper()
	base := fmt.Sprintf("kgf%d-%d", os.Getpid()%100000, labSeq.Add(1))
	f := &fleet{t: t, net: &lab{t: t, prefix: base, dir: t.TempDir()}, spa: newSPAKeys(t)}
	t.Cleanup(f.net.cleanup) // registered first, so it runs last: namespaces go after every daemon's log is shown
	for _, name := range []string{"wan", "sync", "c1", "c2"} {
		if err := f.net.nets.Add(f.net.ns(name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, br := range []string{"wan", "sync"} {
		f.net.must("ip", "-n", f.net.ns(br), "link", "add", "br0", "type", "bridge")
		f.net.must("ip", "-n", f.net.ns(br), "link", "set", "br0", "up")
	}
	f.plug("wan", f.net.ns("c1"), "eth0", netip.PrefixFrom(fleetC1, 24))
	f.plug("wan", f.net.ns("c2"), "eth0", netip.PrefixFrom(fleetC2, 24))

	f.key = filepath.Join(f.net.dir, "cluster.key")
	f.writeKey(f.key)
	for i := 1; i <= n; i++ {
		g := &gateway{
			lab:  &lab{t: t, prefix: fmt.Sprintf("%s-%d", base, i), dir: t.TempDir(), logLevel: "debug"},
			name: fmt.Sprintf("gw%d", i),
			wan:  netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}),
			sync: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}),
			key:  f.key,
		}
		t.Cleanup(g.cleanup)
		if err := f.net.nets.Add(g.ns("gw")); err != nil {
			t.Fatal(err)
		}
		f.plug("wan", g.ns("gw"), "wan0", netip.PrefixFrom(g.wan, 24))
		f.plug("sync", g.ns("gw"), "sync0", netip.PrefixFrom(g.sync, 24))
		for _, port := range []uint16{22, 443, 2222} {
			g.serve("gw", netip.AddrPortFrom(netip.IPv6Unspecified(), port), fmt.Sprintf("%s-%d", g.name, port))
		}
		f.gws = append(f.gws, g)
	}
	return f
}

// plug joins namespace ns to bridge namespace br with a veth named dev on
// ns's side.
func (f *fleet) plug(br, ns, dev string, addr netip.Prefix) {
	f.t.Helper()
	port := strings.TrimPrefix(ns, f.net.prefix+"-") + "-" + dev
	if len(port) > 15 { // IFNAMSIZ
		port = port[len(port)-15:]
	}
	if err := netns.Veth(
		netns.End{NS: f.net.ns(br), Dev: port},
		netns.End{NS: ns, Dev: dev, Addrs: []netip.Prefix{addr}},
	); err != nil {
		f.t.Fatal(err)
	}
	f.net.must("ip", "-n", f.net.ns(br), "link", "set", port, "master", "br0")
}

// writeKey writes a new cluster key to path, as an operator makes one.
func (f *fleet) writeKey(path string) {
	f.t.Helper()
	out := f.net.must(binPath, "keygen", "--kind", "cluster")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		f.t.Fatal(err)
	}
}

// policy is the gateway's doors with its cluster block: every other
// gateway of the fleet is a peer.
func (f *fleet) policy(g *gateway) string {
	var peers []string
	for _, p := range f.gws {
		if p != g {
			peers = append(peers, strconv.Quote(netip.AddrPortFrom(p.sync, clusterPort).String()))
		}
	}
	return fmt.Sprintf(`
cluster {
  node        = %q
  listen      = %q
  peers       = [%s]
  secret_file = %q
}
`, g.name, netip.AddrPortFrom(g.sync, clusterPort), strings.Join(peers, ", "), g.key) +
		fmt.Sprintf(fleetDoors, f.spa.enc, f.spa.mac, otpSecret)
}

// start loads the gateway's steering rules and runs its daemon.
func (f *fleet) start(g *gateway) {
	f.t.Helper()
	g.doors = f.policy(g)
	g.writePolicy(g.doors)
	rules := f.net.must(binPath, "rules", "-4", "--config", g.config())
	f.net.mustIn(rules, "ip", "netns", "exec", g.ns("gw"), "iptables-restore", "--noflush")
	g.start()
}

// startAll starts every gateway and waits until each sees all of them.
func (f *fleet) startAll() {
	f.t.Helper()
	for _, g := range f.gws {
		f.start(g)
	}
	var names []string
	for _, g := range f.gws {
		names = append(names, g.name)
	}
	for _, g := range f.gws {
		f.waitMembers(g, names, 10*time.Second)
	}
}

// clusterStatus is what `knockgate status --json` says of the cluster and
// the grants.
type clusterStatus struct {
	Cluster struct {
		Members []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"members"`
	} `json:"cluster"`
	Doors []struct {
		Name   string        `json:"name"`
		Grants []statusGrant `json:"grants"`
	} `json:"doors"`
}

type statusGrant struct {
	Source netip.Addr `json:"source"`
	Origin string     `json:"origin"`
}

func (g *gateway) status() clusterStatus {
	g.t.Helper()
	var st clusterStatus
	out := g.must(binPath, "status", "--socket", g.socket(), "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		g.t.Fatalf("%s: status --json: %v\n%s", g.name, err, out)
	}
	return st
}

// alive lists the members the gateway's status shows as alive.
func (st clusterStatus) alive() []string {
	var out []string
	for _, m := range st.Cluster.Members {
		if m.State == "alive" {
			out = append(out, m.Name)
		}
	}
	slices.Sort(out)
	return out
}

func (st clusterStatus) hasGrant(door string, src netip.Addr) bool {
	return st.origin(door, src) != "-"
}

// origin is the gateway that made door's grant for src, "-" without one.
func (st clusterStatus) origin(door string, src netip.Addr) string {
	for _, d := range st.Doors {
		if d.Name != door {
			continue
		}
		for _, g := range d.Grants {
			if g.Source == src {
				return g.Origin
			}
		}
	}
	return "-"
}

// waitMembers waits until g's status shows exactly want as alive members.
func (f *fleet) waitMembers(g *gateway, want []string, timeout time.Duration) {
	f.t.Helper()
	want = slices.Sorted(slices.Values(want))
	deadline := time.Now().Add(timeout)
	for {
		got := g.status().alive()
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s: alive members %v after %v, want %v", g.name, got, timeout, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// opensWithin dials to:port from ns until a handshake completes, each try
// bounded to 200ms (a refused SYN is dropped, so a closed door is a
// timeout), and returns when the successful try began, or false after
// budget.
func (f *fleet) opensWithin(ns string, to netip.Addr, port int, budget time.Duration) (time.Duration, bool) {
	return f.pollDial(ns, to, port, budget, true)
}

// closesWithin dials until a handshake fails and returns when the failing
// try began, or false after budget.
func (f *fleet) closesWithin(ns string, to netip.Addr, port int, budget time.Duration) (time.Duration, bool) {
	return f.pollDial(ns, to, port, budget, false)
}

func (f *fleet) pollDial(ns string, to netip.Addr, port int, budget time.Duration, want bool) (time.Duration, bool) {
	start := time.Now()
	addr := netip.AddrPortFrom(to, uint16(port)).String()
	for time.Since(start) < budget {
		// A refused try lasts its 200ms timeout: the time is its start's.
		tried := time.Since(start)
		var ok bool
		f.net.inNS(ns, func() error {
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
			}
			ok = err == nil
			return nil
		})
		if ok == want {
			return tried, true
		}
		if ok { // an accepted try returns at once; do not hammer the door
			time.Sleep(50 * time.Millisecond)
		}
	}
	return budget, false
}

// knockSSH knocks the ssh door of the gateway at to from ns.
func (f *fleet) knockSSH(ns string, to netip.Addr) {
	f.t.Helper()
	f.net.knock(ns, v4, to, "7000", "8000:udp", "9000")
}

func clientAddr(ns string) netip.Addr {
	if ns == "c2" {
		return fleetC2
	}
	return fleetC1
}

// Debian's knock on gw1 opens tcp/22 on gw2 and gw3 for that client within
// a second; the other client stays refused everywhere.
func TestClusterKnockOpensEverywhere(t *testing.T) {
	f := newFleet(t, 3)
	f.startAll()
	for _, g := range f.gws {
		f.net.wantTimeout("c1", g.wan, 22)
	}
	gw1 := f.gws[0]
	f.knockSSH("c1", gw1.wan)
	knocked := time.Now()
	for _, g := range f.gws[1:] {
		if _, ok := f.opensWithin("c1", g.wan, 22, time.Second-time.Since(knocked)); !ok {
			t.Fatalf("c1 cannot reach %s:22 within a second of its knock on gw1", g.name)
		}
		t.Logf("knock on gw1 to usable on %s: %v", g.name, time.Since(knocked))
	}
	for _, g := range f.gws {
		f.net.wantConnect("c1", g.wan, 22)
		f.net.wantTimeout("c2", g.wan, 22)
		f.net.wantTimeout("c1", g.wan, 443) // only the door's own port
		if st := g.status(); st.origin("ssh", fleetC1) != "gw1" || st.hasGrant("ssh", fleetC2) {
			t.Fatalf("%s: status does not show exactly c1's grant, made on gw1: %+v", g.name, st.Doors)
		}
		// Same doors, each its own cluster block: no peer has "another
		// policy".
		if g.hasLog("another policy") {
			t.Errorf("%s warns of a peer with another policy, though every gateway has the same doors", g.name)
		}
	}
}

// knockgate revoke on gw3 closes the door that a knock on gw1 opened, on
// gw1 at once.
func TestClusterRevokeAnywhere(t *testing.T) {
	f := newFleet(t, 3)
	f.startAll()
	gw1, gw3 := f.gws[0], f.gws[2]
	f.knockSSH("c1", gw1.wan)
	for _, g := range f.gws {
		if _, ok := f.opensWithin("c1", g.wan, 22, time.Second); !ok {
			t.Fatalf("c1 cannot reach %s:22 after its knock on gw1", g.name)
		}
	}
	out := f.net.must(binPath, "revoke", "--socket", gw3.socket(), "--door", "ssh", "--source", fleetC1.String())
	if !strings.Contains(out, "revoked") {
		t.Fatalf("revoke on gw3: %s", out)
	}
	took, ok := f.closesWithin("c1", gw1.wan, 22, time.Second)
	if !ok {
		t.Fatalf("gw1 still admits c1 a second after the revoke on gw3")
	}
	t.Logf("revoke on gw3 to closed on gw1: %v", took)
	for _, g := range f.gws {
		f.net.wantTimeout("c1", g.wan, 22)
		if g.status().hasGrant("ssh", fleetC1) {
			t.Fatalf("%s: status still shows the revoked grant", g.name)
		}
	}
	// The revoke ends that grant, not the door: a new knock opens it again.
	f.knockSSH("c1", gw1.wan)
	if _, ok := f.opensWithin("c1", gw3.wan, 22, time.Second); !ok {
		t.Fatal("a knock after the revoke does not open gw3")
	}
}

// fwknop sends a stock fwknop packet for tcp/2222 from ns to the gateway
// at to, saving it to save.
func (f *fleet) fwknop(ns string, to netip.Addr, save string) {
	f.t.Helper()
	f.net.must("ip", "netns", "exec", f.net.ns(ns), "env", "HOME="+f.t.TempDir(),
		"fwknop", "--no-rc-file", "--no-save-args", "-D", to.String(), "-p", "62201",
		"--use-hmac", "--key-base64-rijndael", f.spa.enc, "--key-base64-hmac", f.spa.mac, "--hmac-digest-type", "sha256",
		"-A", "tcp/2222", "-a", clientAddr(ns).String(), "-B", save)
}

// An SPA packet used on gw1 is spent on gw2 too: replayed there after its
// grant expired it opens nothing. A TOTP sequence used on gw1 is spent on
// gw2 for every other source in the same step.
func TestClusterReplayAndTOTPShared(t *testing.T) {
	if _, err := exec.LookPath("fwknop"); err != nil {
		t.Fatalf("install fwknop-client (see .ci/run): %v", err)
	}
	f := newFleet(t, 3)
	f.startAll()
	gw1, gw2 := f.gws[0], f.gws[1]

	pkt := filepath.Join(f.net.dir, "sent.pkt")
	f.fwknop("c1", gw1.wan, pkt)
	gw1.waitLog("grant opened", 3*time.Second, "door=nas", "source="+fleetC1.String())
	if _, ok := f.opensWithin("c1", gw2.wan, 2222, time.Second); !ok {
		t.Fatal("the SPA grant made on gw1 is not usable on gw2")
	}
	b, err := os.ReadFile(pkt)
	if err != nil {
		t.Fatal(err)
	}
	payload := strings.TrimSpace(string(b)) // -B adds a newline the wire never carries
	if _, ok := f.closesWithin("c1", gw2.wan, 2222, 6*time.Second); !ok {
		t.Fatal("the 3s SPA grant still admits c1 on gw2 6s later")
	}
	parts := []string{"reason=spa_replay", "source=" + fleetC1.String()}
	n := gw2.countLog(parts...)
	f.net.mustIn(payload, "ip", "netns", "exec", f.net.ns("c1"), "nc", "-u", "-n", "-w1", gw2.wan.String(), "62201")
	gw2.waitLogAfter(n, 3*time.Second, parts...)
	f.net.wantTimeout("c1", gw2.wan, 2222)

	// TOTP: knock well inside a step, so both knocks fall in the same one.
	cfg := gw1.otpDoor()
	if left := time.Until(cfg.StepEnds(cfg.Counter(time.Now()))); left < 8*time.Second {
		time.Sleep(left + 100*time.Millisecond)
	}
	seq := knockArgs(cfg.Sequence(cfg.Counter(time.Now()), nil))
	f.net.knock("c1", v4, gw1.wan, seq...)
	if _, ok := f.opensWithin("c1", gw1.wan, 443, time.Second); !ok {
		t.Fatal("the TOTP sequence does not open gw1 for c1")
	}
	if _, ok := f.opensWithin("c1", gw2.wan, 443, time.Second); !ok {
		t.Fatal("the TOTP grant made on gw1 is not usable on gw2")
	}
	f.net.knock("c2", v4, gw2.wan, seq...)
	gw2.waitLog("TOTP sequence replayed by another source", 3*time.Second, "source="+fleetC2.String())
	for _, g := range f.gws {
		f.net.wantTimeout("c2", g.wan, 443)
	}
}

// kill -9 gw1: the grant made there still works on gw2 and expires there on
// time; gw1, restarted without its state file, catches up from its peers.
func TestClusterSurvivesCrash(t *testing.T) {
	f := newFleet(t, 3)
	f.startAll()
	gw1, gw2 := f.gws[0], f.gws[1]
	f.knockSSH("c1", gw1.wan)
	opened := time.Now()
	if _, ok := f.opensWithin("c1", gw2.wan, 22, time.Second); !ok {
		t.Fatal("the grant made on gw1 is not usable on gw2")
	}
	gw1.kill()
	f.net.wantTimeout("c1", gw1.wan, 22) // fail closed: nobody decides for gw1
	f.net.wantConnect("c1", gw2.wan, 22)
	f.waitMembers(gw2, []string{"gw2", "gw3"}, 10*time.Second)
	f.net.wantConnect("c1", gw2.wan, 22)

	if err := os.Remove(gw1.stateFile()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	restarted := time.Now()
	gw1.start()
	for gw1.status().origin("ssh", fleetC1) != "gw1" {
		if time.Since(restarted) > 5*time.Second {
			t.Fatalf("gw1, restarted without its state file, has not caught up after %v", time.Since(restarted))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("gw1 restarted without state: grant back in status after %v (daemon start included)", time.Since(restarted))
	f.net.wantConnect("c1", gw1.wan, 22)
	f.net.wantTimeout("c2", gw1.wan, 22)

	if _, ok := f.closesWithin("c1", gw2.wan, 22, 25*time.Second); !ok {
		t.Fatal("the 20s grant still admits c1 on gw2 25s after the knock")
	}
	held := time.Since(opened)
	if held < 19*time.Second || held > 22*time.Second {
		t.Fatalf("the grant ended on gw2 %v after the knock on gw1, want about 20s", held)
	}
	t.Logf("the 20s grant made on gw1 ended on gw2 %v after the knock", held)
	for _, g := range f.gws {
		f.net.wantTimeout("c1", g.wan, 22)
	}
}

// gw3 cut off from the sync link misses a knock on gw1; once the link is
// back it converges and honours the grant within a few seconds.
func TestClusterPartitionHeals(t *testing.T) {
	f := newFleet(t, 3)
	f.startAll()
	gw1, gw2, gw3 := f.gws[0], f.gws[1], f.gws[2]
	f.net.must("ip", "-n", gw3.ns("gw"), "link", "set", "sync0", "down")
	f.knockSSH("c1", gw1.wan)
	if _, ok := f.opensWithin("c1", gw2.wan, 22, time.Second); !ok {
		t.Fatal("the grant made on gw1 is not usable on gw2")
	}
	f.net.wantTimeout("c1", gw3.wan, 22) // the partition is real
	time.Sleep(2 * time.Second)
	f.net.must("ip", "-n", gw3.ns("gw"), "link", "set", "sync0", "up")
	// Each gateway exchanges its full state with a peer every 5 s, so the
	// missed grant arrives within that, and a rejoin may bring it sooner.
	took, ok := f.opensWithin("c1", gw3.wan, 22, 6*time.Second)
	if !ok {
		t.Fatal("gw3 does not honour the grant 6s after its sync link came back")
	}
	t.Logf("sync link up to grant usable on gw3: %v", took)
	f.net.wantTimeout("c2", gw3.wan, 22)
	f.waitMembers(gw3, []string{"gw1", "gw2", "gw3"}, 10*time.Second)
}

// A gateway with another key does not join, and its grants never reach the
// others, nor theirs it.
func TestClusterWrongKeyStaysOut(t *testing.T) {
	f := newFleet(t, 3)
	gw1, gw2, gw3 := f.gws[0], f.gws[1], f.gws[2]
	gw3.key = filepath.Join(f.net.dir, "other.key")
	f.writeKey(gw3.key)
	for _, g := range f.gws {
		f.start(g)
	}
	f.waitMembers(gw1, []string{"gw1", "gw2"}, 10*time.Second)
	f.waitMembers(gw2, []string{"gw1", "gw2"}, 10*time.Second)

	f.knockSSH("c1", gw3.wan)
	if _, ok := f.opensWithin("c1", gw3.wan, 22, time.Second); !ok {
		t.Fatal("gw3's own door does not open")
	}
	f.knockSSH("c2", gw1.wan)
	if _, ok := f.opensWithin("c2", gw2.wan, 22, time.Second); !ok {
		t.Fatal("the grant made on gw1 is not usable on gw2")
	}
	// Long past a propagation (about a millisecond) and a few rounds of
	// memberlist's probes and joins.
	time.Sleep(3 * time.Second)
	for _, g := range []*gateway{gw1, gw2} {
		f.net.wantTimeout("c1", g.wan, 22)
		if g.status().hasGrant("ssh", fleetC1) {
			t.Fatalf("%s holds the grant made on gw3, which has another key", g.name)
		}
	}
	f.net.wantTimeout("c2", gw3.wan, 22)
	if slices.Contains(gw1.status().alive(), "gw3") || len(gw3.status().alive()) != 1 {
		t.Fatalf("gw3 joined with another key: gw1 sees %v, gw3 sees %v", gw1.status().alive(), gw3.status().alive())
	}
}

// keepalivedConf is one gateway's keepalived configuration: the example in
// contrib, which is gw1's, with g's name and priority, and a track script
// that checks g's daemon instead of its systemd unit.
func (f *fleet) keepalivedConf(g *gateway, priority int) string {
	f.t.Helper()
	b, err := os.ReadFile("../contrib/keepalived/keepalived.conf")
	if err != nil {
		f.t.Fatal(err)
	}
	conf := string(b)
	for _, r := range [][2]string{
		{"router_id gw1\n", "router_id " + g.name + "\n"},
		{"priority 150\n", fmt.Sprintf("priority %d\n", priority)},
		{`script "/usr/bin/systemctl is-active --quiet knockgate.service"`, fmt.Sprintf(`script "/usr/bin/kill -0 %d"`, g.daemon.Process.Pid)},
		{"203.0.113.100/24 dev wan0", fleetVIP.String() + " dev wan0"},
	} {
		if !strings.Contains(conf, r[0]) {
			f.t.Fatalf("contrib/keepalived/keepalived.conf has no %q", r[0])
		}
		conf = strings.Replace(conf, r[0], r[1], 1)
	}
	return conf
}

// startKeepalived runs keepalived in g's namespace in the foreground, VRRP
// only, with its pid files and log in g's directory, once g's daemon runs.
func (f *fleet) startKeepalived(g *gateway, priority int) {
	f.t.Helper()
	conf := filepath.Join(g.dir, "keepalived.conf")
	if err := os.WriteFile(conf, []byte(f.keepalivedConf(g, priority)), 0o600); err != nil {
		f.t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(g.dir, "keepalived.log"))
	if err != nil {
		f.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", g.ns("gw"), "keepalived", "-n", "-l", "-D", "--vrrp",
		"--use-file", conf,
		"-p", filepath.Join(g.dir, "keepalived.pid"),
		"-r", filepath.Join(g.dir, "vrrp.pid"),
		"-c", filepath.Join(g.dir, "checkers.pid"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	g.mu.Lock()
	g.procs = append(g.procs, cmd)
	g.mu.Unlock()
	g.keepalive = cmd
	f.t.Cleanup(func() {
		if f.t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			f.t.Logf("%s keepalived log:\n%s", g.name, b)
		}
	})
}

// killKeepalived kills g's keepalived the hard way, its VRRP child first
// (a child outliving its parent would step down cleanly, which a crash
// does not).
func (f *fleet) killKeepalived(g *gateway) {
	f.t.Helper()
	if b, err := os.ReadFile(filepath.Join(g.dir, "vrrp.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	g.keepalive.Process.Kill()
	g.keepalive.Wait()
}

// holdsVIP reports whether g has the virtual address.
func (f *fleet) holdsVIP(g *gateway) bool {
	out, err := g.run("", "ip", "-n", g.ns("gw"), "-br", "addr", "show", "dev", "wan0")
	return err == nil && strings.Contains(out, fleetVIP.String())
}

func (f *fleet) waitVIP(g *gateway, timeout time.Duration) time.Duration {
	f.t.Helper()
	start := time.Now()
	for !f.holdsVIP(g) {
		if time.Since(start) > timeout {
			f.t.Fatalf("%s does not hold the virtual address %v after %v", g.name, fleetVIP, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// An HA pair with keepalived: the client knocks the virtual address, the
// master dies (daemon and keepalived killed, then its WAN link cut, as a
// box losing power would), the address moves to the backup, and the client
// connects to it without knocking again.
func TestClusterKeepalivedFailover(t *testing.T) {
	if _, err := exec.LookPath("keepalived"); err != nil {
		t.Fatalf("install keepalived (see .ci/run): %v", err)
	}
	f := newFleet(t, 2)
	f.startAll()
	master, backup := f.gws[0], f.gws[1]
	f.startKeepalived(master, 150)
	f.waitVIP(master, 10*time.Second)
	f.startKeepalived(backup, 100)
	time.Sleep(2 * time.Second) // the backup hears the master's adverts and stays backup
	if f.holdsVIP(backup) {
		t.Fatal("both gateways hold the virtual address")
	}
	vip := fleetVIP.Addr()
	f.net.wantTimeout("c1", vip, 22)
	f.knockSSH("c1", vip)
	f.net.wantConnect("c1", vip, 22)
	master.waitLog("grant opened", 2*time.Second, "door=ssh", "source="+fleetC1.String())
	if _, ok := f.opensWithin("c1", backup.wan, 22, time.Second); !ok {
		t.Fatal("the grant made on the master is not usable on the backup")
	}

	master.kill()
	f.killKeepalived(master)
	f.net.must("ip", "-n", master.ns("gw"), "link", "set", "wan0", "down")
	died := time.Now()
	moved := f.waitVIP(backup, 10*time.Second)
	took, ok := f.opensWithin("c1", vip, 22, 5*time.Second)
	if !ok {
		t.Fatal("the client cannot connect to the virtual address after the failover without knocking again")
	}
	t.Logf("failover: the address moved %v after the master died; the client connected %v after it moved (%v in all)",
		moved, took, time.Since(died))
	f.net.wantTimeout("c2", vip, 22)
}
