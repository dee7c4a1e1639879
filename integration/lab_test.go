//go:build integration

package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/knockgate/knockgate/internal/netns"
)

var binPath string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("integration tests need root (network namespaces, iptables, NFQUEUE): skipped")
		os.Exit(0)
	}
	binPath = os.Getenv("KNOCKGATE_BIN")
	if binPath == "" {
		dir, err := os.MkdirTemp("", "knockgate-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		binPath = filepath.Join(dir, "knockgate")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/knockgate").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "failed to build knockgate: %v\n%s", err, out)
			os.Exit(1)
		}
		defer os.RemoveAll(dir)
	}
	for _, tool := range []string{"ip", "iptables-restore", "ip6tables-restore", "nc", "knock", "nmap"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "integration tests need %s (see .ci/run): %v\n", tool, err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// family holds the addresses of the lab for one IP version.
type family struct {
	name     string
	gwForC1  netip.Addr // the gateway as client 1 dials it
	gwForC2  netip.Addr
	c1, c2   netip.Addr
	lan      netip.Addr
	knockArg string // Debian knock's family flag
}

var (
	v4 = family{
		name: "IPv4", knockArg: "-4",
		gwForC1: netip.MustParseAddr("198.51.100.1"), c1: netip.MustParseAddr("198.51.100.10"),
		gwForC2: netip.MustParseAddr("203.0.113.1"), c2: netip.MustParseAddr("203.0.113.20"),
		lan: netip.MustParseAddr("192.0.2.10"),
	}
	v6 = family{
		name: "IPv6", knockArg: "-6",
		gwForC1: netip.MustParseAddr("2001:db8:1::1"), c1: netip.MustParseAddr("2001:db8:1::10"),
		gwForC2: netip.MustParseAddr("2001:db8:3::1"), c2: netip.MustParseAddr("2001:db8:3::20"),
		lan: netip.MustParseAddr("2001:db8:2::10"),
	}
	families = []family{v4, v6}
)

var labSeq atomic.Int32

// lab is a gateway namespace with two clients on separate WAN links and a
// LAN host behind it:
//
//	c1 (198.51.100.10, 2001:db8:1::10) ─┐
//	c2 (203.0.113.20, 2001:db8:3::20)  ─┼─ gw ── lan (192.0.2.10, 2001:db8:2::10)
type lab struct {
	t      *testing.T
	prefix string
	dir    string

	nets   netns.Lab
	mu     sync.Mutex
	procs  []*exec.Cmd
	closer []io.Closer

	daemon *exec.Cmd
	log    string
	// doors is the policy's door blocks; start and writePolicy add the
	// lab's gate and metrics settings, and gateExtra inside the gate block.
	doors     string
	gateExtra string
	// logLevel is the daemon's; debug unless a test needs speed.
	logLevel string
}

func (l *lab) ns(name string) string { return l.prefix + "-" + name }

// newLab builds the lab; rulesArgs go to `knockgate rules` after the
// lab's own, such as --queues.
func newLab(t *testing.T, rulesArgs ...string) *lab {
	t.Helper()
	l := &lab{t: t, prefix: fmt.Sprintf("kgt%d-%d", os.Getpid()%100000, labSeq.Add(1)), dir: t.TempDir(), doors: policy}
	t.Cleanup(l.cleanup)
	for _, n := range []string{"gw", "c1", "c2", "lan"} {
		if err := l.nets.Add(l.ns(n)); err != nil {
			t.Fatal(err)
		}
	}
	p := netip.MustParsePrefix
	links := []struct {
		peer         string
		gw4, gw6     netip.Prefix
		peer4, peer6 netip.Prefix
	}{
		{"c1", p("198.51.100.1/24"), p("2001:db8:1::1/64"), p("198.51.100.10/24"), p("2001:db8:1::10/64")},
		{"c2", p("203.0.113.1/24"), p("2001:db8:3::1/64"), p("203.0.113.20/24"), p("2001:db8:3::20/64")},
		{"lan", p("192.0.2.1/24"), p("2001:db8:2::1/64"), p("192.0.2.10/24"), p("2001:db8:2::10/64")},
	}
	gw := l.ns("gw")
	for _, k := range links {
		peer := l.ns(k.peer)
		if err := netns.Veth(
			netns.End{NS: gw, Dev: k.peer, Addrs: []netip.Prefix{k.gw4, k.gw6}},
			netns.End{NS: peer, Dev: "eth0", Addrs: []netip.Prefix{k.peer4, k.peer6}},
		); err != nil {
			t.Fatal(err)
		}
		l.must("ip", "-n", peer, "route", "add", "default", "via", k.gw4.Addr().String())
		l.must("ip", "-n", peer, "-6", "route", "add", "default", "via", k.gw6.Addr().String())
	}
	l.must("ip", "netns", "exec", gw, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")

	// The steering rules as an operator would load them: printed by the
	// binary itself, with a static DNAT of gw:2222 to the LAN host.
	out := l.must(binPath, append([]string{"rules", "--dnat", "tcp/2222=192.0.2.10:2222", "--dnat", "tcp/2222=[2001:db8:2::10]:2222"}, rulesArgs...)...)
	v4rules, v6rules, ok := strings.Cut(out, "# ---- ip6tables-restore --noflush ----")
	if !ok {
		t.Fatalf("knockgate rules printed no ip6tables section:\n%s", out)
	}
	l.mustIn(v4rules, "ip", "netns", "exec", gw, "iptables-restore", "--noflush")
	l.mustIn(v6rules, "ip", "netns", "exec", gw, "ip6tables-restore", "--noflush")

	// Services: 22 and 2222 are protected by the test policy, 80 is not;
	// the LAN host serves 2222 behind the DNAT.
	// The gateway's listeners on [::] are dual-stack: one serves both
	// families.
	l.serve("gw", netip.AddrPortFrom(netip.IPv6Unspecified(), 22), "gw-ssh")
	l.serve("gw", netip.AddrPortFrom(netip.IPv6Unspecified(), 80), "gw-web")
	l.serve("gw", netip.AddrPortFrom(netip.IPv6Unspecified(), 443), "gw-https")
	for _, fam := range families {
		l.serve("lan", netip.AddrPortFrom(fam.lan, 2222), "lan-ssh")
	}
	return l
}

func (l *lab) cleanup() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.closer {
		c.Close()
	}
	for _, p := range l.procs {
		if p.Process != nil {
			p.Process.Kill()
			p.Wait()
		}
	}
	if err := l.nets.Close(); err != nil {
		l.t.Errorf("cleanup: %v", err)
	}
	if l.t.Failed() && l.log != "" {
		if b, err := os.ReadFile(l.log); err == nil {
			l.t.Logf("knockgate log:\n%s", b)
		}
	}
}

func (l *lab) run(stdin string, name string, args ...string) (string, error) {
	return netns.Run(2*time.Minute, stdin, name, args...)
}

func (l *lab) must(name string, args ...string) string {
	l.t.Helper()
	return l.mustIn("", name, args...)
}

func (l *lab) mustIn(stdin, name string, args ...string) string {
	l.t.Helper()
	out, err := l.run(stdin, name, args...)
	if err != nil {
		l.t.Fatal(err)
	}
	return out
}

// inNS runs f on an OS thread switched into namespace ns. Sockets keep the
// namespace they were created in, so listeners and connections made in f
// live in ns while the rest of the test stays in the host namespace.
func (l *lab) inNS(ns string, f func() error) error {
	return netns.Do(l.ns(ns), f)
}

// serve starts a TCP server in ns that greets each connection with banner
// and then echoes lines back.
func (l *lab) serve(ns string, at netip.AddrPort, banner string) {
	l.t.Helper()
	ln, err := netns.Listen(l.ns(ns), "tcp", at.String())
	if err != nil {
		l.t.Fatal(err)
	}
	l.mu.Lock()
	l.closer = append(l.closer, ln)
	l.mu.Unlock()
	netns.Serve(ln, func(c net.Conn) {
		defer c.Close()
		fmt.Fprintf(c, "%s\n", banner)
		io.Copy(c, c)
	})
}

// policy is the lab's policy: short grants so expiry is quick to see.
const policy = `
door "ssh" {
  sequence         = ["tcp/7000", "udp/8000", "tcp/9000"]
  sequence_timeout = "5s"
  open             = ["tcp/22"]
  open_for         = "4s"
  close_sequence   = ["tcp/9100", "tcp/9200"]
}

# An ascending all-TCP sequence: what a sequential port scan walks through
# in knockd.
door "ascending" {
  sequence = ["tcp/3000", "tcp/4000", "tcp/5000"]
  open     = ["tcp/443"]
  open_for = "60s"
}

# gw:2222 is forwarded to the LAN host by a static DNAT.
door "lan" {
  sequence = ["udp/6100", "tcp/6200"]
  open     = ["tcp/2222"]
  open_for = "60s"
}
`

func (l *lab) config() string      { return filepath.Join(l.dir, "policy.hcl") }
func (l *lab) socket() string      { return filepath.Join(l.dir, "kg.sock") }
func (l *lab) stateFile() string   { return filepath.Join(l.dir, "state.json") }
func (l *lab) metricsAddr() string { return "127.0.0.1:8789" }

// writePolicy writes the policy file: the lab's settings, then doors.
func (l *lab) writePolicy(doors string) {
	l.t.Helper()
	src := fmt.Sprintf("gate {\n  state_file     = %q\n  control_socket = %q\n%s\n}\n\nmetrics {\n  listen = %q\n}\n%s",
		l.stateFile(), l.socket(), l.gateExtra, l.metricsAddr(), doors)
	if err := os.WriteFile(l.config(), []byte(src), 0o600); err != nil {
		l.t.Fatal(err)
	}
}

// start runs the daemon in the gateway and waits until its queue is bound.
func (l *lab) start() {
	l.t.Helper()
	l.writePolicy(l.doors)
	cfg := l.config()
	if l.daemon != nil && l.daemon.ProcessState == nil {
		l.t.Fatal("start: a daemon is already running")
	}
	l.log = filepath.Join(l.dir, fmt.Sprintf("knockgate-%d.log", len(l.procs)))
	f, err := os.Create(l.log)
	if err != nil {
		l.t.Fatal(err)
	}
	defer f.Close()
	level := l.logLevel
	if level == "" {
		level = "debug"
	}
	cmd := exec.Command("ip", "netns", "exec", l.ns("gw"), binPath, "run", "--config", cfg, "--log-level", level)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.mu.Lock()
	l.procs = append(l.procs, cmd)
	l.daemon = cmd
	l.mu.Unlock()
	l.waitLog("knockgate ready", 10*time.Second)
}

// kill ends the daemon the hard way, as a crash would.
func (l *lab) kill() {
	l.t.Helper()
	if err := l.daemon.Process.Kill(); err != nil {
		l.t.Fatal(err)
	}
	l.daemon.Wait()
}

// waitLog waits for a line of the daemon's log that contains every part.
func (l *lab) waitLog(part string, timeout time.Duration, more ...string) {
	l.t.Helper()
	l.waitLogAfter(0, timeout, append([]string{part}, more...)...)
}

// waitLogAfter waits for a log line with every part beyond the first n
// such lines: the line a step caused, not one an earlier step left.
func (l *lab) waitLogAfter(n int, timeout time.Duration, parts ...string) {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for l.countLog(parts...) <= n {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(l.log)
			l.t.Fatalf("no log line with %q beyond the first %d within %v; log:\n%s", parts, n, timeout, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (l *lab) hasLog(parts ...string) bool { return l.countLog(parts...) > 0 }

// countLog counts the daemon's log lines that contain every part.
func (l *lab) countLog(parts ...string) int {
	f, err := os.Open(l.log)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
lines:
	for sc.Scan() {
		for _, p := range parts {
			if !strings.Contains(sc.Text(), p) {
				continue lines
			}
		}
		n++
	}
	return n
}

// connects reports whether nc in namespace ns completes a TCP handshake
// with to:port within timeout, as a user checking a port would.
func (l *lab) connects(ns string, to netip.Addr, port int, timeout time.Duration) bool {
	secs := fmt.Sprint(int(timeout.Seconds()))
	_, err := l.run("", "ip", "netns", "exec", l.ns(ns), "nc", "-z", "-n", "-w", secs, to.String(), fmt.Sprint(port))
	return err == nil
}

func (l *lab) wantConnect(ns string, to netip.Addr, port int) {
	l.t.Helper()
	if !l.connects(ns, to, port, 3*time.Second) {
		l.t.Fatalf("%s: connect to %s port %d failed, want it to succeed", ns, to, port)
	}
}

func (l *lab) wantTimeout(ns string, to netip.Addr, port int) {
	l.t.Helper()
	if l.connects(ns, to, port, time.Second) {
		l.t.Fatalf("%s: connect to %s port %d succeeded, want it to time out", ns, to, port)
	}
}

// knock sends a sequence with Debian's knock client from ns.
func (l *lab) knock(ns string, fam family, to netip.Addr, ports ...string) {
	l.t.Helper()
	args := []string{"netns", "exec", l.ns(ns), "knock", fam.knockArg, "-d", "100", to.String()}
	l.must("ip", append(args, ports...)...)
}

// dial opens a TCP connection from ns and returns the server's banner.
func (l *lab) dial(ns string, to netip.AddrPort) (net.Conn, string) {
	l.t.Helper()
	var c net.Conn
	err := l.inNS(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp", to.String(), 3*time.Second)
		return err
	})
	if err != nil {
		l.t.Fatalf("dial %s from %s: %v", to, ns, err)
	}
	l.mu.Lock()
	l.closer = append(l.closer, c)
	l.mu.Unlock()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	banner, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		l.t.Fatalf("read banner from %s: %v", to, err)
	}
	return c, strings.TrimSpace(banner)
}

// echo checks that an open connection still carries data both ways.
func echo(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(c, "still here\n"); err != nil {
		t.Fatalf("write on established connection: %v", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "still here\n" {
		t.Fatalf("echo on established connection: %q, %v", line, err)
	}
}
