//go:build integration

package gate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict"

	"github.com/knockgate/knockgate/internal/netns"
)

// These tests need root and the kernel's nfnetlink_queue. Each builds two
// network namespaces joined by a veth pair and sends traffic only between
// them:
//
//	client  198.51.100.1/24  2001:db8:1::1/64  (veth c0)
//	server  198.51.100.2/24  2001:db8:1::2/64  (veth s0, NFQUEUE rules, the Queue)
//
// Run with: go test -tags integration -run Queue -v ./gate/

const testQueueNum = 7

var (
	cliAddr4 = netip.MustParseAddr("198.51.100.1")
	srvAddr4 = netip.MustParseAddr("198.51.100.2")
	cliAddr6 = netip.MustParseAddr("2001:db8:1::1")
	srvAddr6 = netip.MustParseAddr("2001:db8:1::2")
)

// recordingDecider accepts packets to port 8080, drops the rest and keeps
// what it saw. It runs on the queue's receive goroutine.
type recordingDecider struct {
	mu   sync.Mutex
	seen []verdict.Packet
}

func (d *recordingDecider) Decide(p verdict.Packet, _ time.Time) verdict.Decision {
	p.Payload = append([]byte(nil), p.Payload...) // it aliases the receive buffer
	d.mu.Lock()
	d.seen = append(d.seen, p)
	d.mu.Unlock()
	if p.DstPort == 8080 {
		return verdict.Decision{Verdict: verdict.Accept, Reason: verdict.ReasonGranted, Door: verdict.NoDoor, Reset: verdict.NoDoor}
	}
	return verdict.Decision{Verdict: verdict.Drop, Reason: verdict.ReasonNoGrant, Door: verdict.NoDoor, Reset: verdict.NoDoor}
}

// find returns the first packet seen that matches.
func (d *recordingDecider) find(proto verdict.Proto, src, dst netip.Addr, port uint16) (verdict.Packet, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.seen {
		if p.Proto == proto && p.Src == src && p.Dst == dst && p.DstPort == port {
			return p, true
		}
	}
	return verdict.Packet{}, false
}

func TestQueueInNamespace(t *testing.T) {
	srv, cli := gateNamespaces(t)

	// Listeners on both ports, so that a failed connection to 8081 is the
	// gate's doing and not a reset from a closed port.
	var udp4, udp6 *net.UDPConn
	inNamespace(t, srv, func() {
		for _, addr := range []netip.Addr{srvAddr4, srvAddr6} {
			for _, port := range []uint16{8080, 8081} {
				if !listenAndClose(t, netip.AddrPortFrom(addr, port)) {
					return
				}
			}
		}
		var err error
		if udp4, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(srvAddr4, 8080))); err != nil {
			t.Errorf("listen: %v", err)
			return
		}
		t.Cleanup(func() { udp4.Close() })
		if udp6, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(srvAddr6, 8080))); err != nil {
			t.Errorf("listen: %v", err)
			return
		}
		t.Cleanup(func() { udp6.Close() })
	})
	if t.Failed() {
		t.FailNow()
	}

	dec := &recordingDecider{}
	q, runErr, stop := startQueue(t, srv, Config{}, dec)

	for _, fam := range []struct {
		name     string
		cli, srv netip.Addr
		udp      *net.UDPConn
	}{
		{"ipv4", cliAddr4, srvAddr4, udp4},
		{"ipv6", cliAddr6, srvAddr6, udp6},
	} {
		t.Run(fam.name, func(t *testing.T) {
			if err := ncZ(cli, fam.srv, 8080); err != nil {
				t.Errorf("connect to %v port 8080 (accepted): %v", fam.srv, err)
			}
			start := time.Now()
			if err := ncZ(cli, fam.srv, 8081); err == nil {
				t.Errorf("connect to %v port 8081 (dropped) succeeded", fam.srv)
			} else if d := time.Since(start); d < 800*time.Millisecond {
				t.Errorf("connect to %v port 8081 failed after %v, too soon for a dropped SYN: %v", fam.srv, d, err)
			}
			for _, port := range []uint16{8080, 8081} {
				p, ok := dec.find(verdict.TCP, fam.cli, fam.srv, port)
				if !ok {
					t.Errorf("decider never saw tcp %v -> %v port %d", fam.cli, fam.srv, port)
					continue
				}
				if p.TCPFlags&(verdict.FlagSYN|verdict.FlagACK) != verdict.FlagSYN || p.SrcPort == 0 || len(p.Payload) != 0 {
					t.Errorf("decider saw %+v, want a bare SYN", p)
				}
			}

			// A datagram to 8080 reaches the listener, and the decider
			// saw its payload.
			msg := "knock-" + fam.name
			if _, err := dialUDPIn(t, cli, netip.AddrPortFrom(fam.srv, 8080)).Write([]byte(msg)); err != nil {
				t.Errorf("send udp: %v", err)
			}
			buf := make([]byte, 64)
			fam.udp.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, from, err := fam.udp.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Errorf("udp datagram to 8080 not delivered: %v", err)
			} else if string(buf[:n]) != msg || from.Addr() != fam.cli {
				t.Errorf("got %q from %v, want %q from %v", buf[:n], from, msg, fam.cli)
			}
			if p, ok := dec.find(verdict.UDP, fam.cli, fam.srv, 8080); !ok || string(p.Payload) != msg {
				t.Errorf("decider saw udp %+v (found %v), want payload %q", p, ok, msg)
			}
		})
	}

	st := q.Stats()
	t.Logf("stats: %+v", st)
	if st.Packets < 6 || st.Accepted < 4 || st.Dropped < 2 || st.Malformed != 0 || st.VerdictErrors != 0 {
		t.Errorf("stats %+v: want at least 6 packets, 4 accepted, 2 dropped, no malformed or verdict errors", st)
	}

	// Stopping unbinds the queue; with nobody bound, the kernel drops what
	// the rule sends to it (no --queue-bypass): the gate fails closed.
	stop()
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of cancel")
	}
	if out := strings.TrimSpace(mustRun(t, "ip", "netns", "exec", srv, "cat", "/proc/net/netfilter/nfnetlink_queue")); out != "" {
		t.Errorf("queue still bound after Run returned:\n%s", out)
	}
	if err := ncZ(cli, srvAddr4, 8080); err == nil {
		t.Error("port 8080 reachable with the queue unbound; want the kernel to drop")
	}
	if err := q.Close(); err != nil {
		t.Errorf("Close after Run: %v", err)
	}
}

// TestQueueMarksAccepted checks, for both families, that an accepted packet
// leaves with the accept mark inside its mask and the rest of its mark
// kept, and that, accepted or not, it skips the rest of the queueing chain
// (mangle PREROUTING) and goes on to the next table's hook: why the
// fail-open rules put their drop rule in mangle INPUT and FORWARD.
func TestQueueMarksAccepted(t *testing.T) {
	srv, cli := gateNamespaces(t)
	for _, ipt := range []string{"iptables", "ip6tables"} {
		for _, r := range [][]string{
			// Another tool's mark in the low bits, set before the queue.
			{"-t", "raw", "-A", "PREROUTING", "-p", "tcp", "--dport", "8080", "-j", "MARK", "--set-mark", "0x5"},
			// Counters of SYNs, the packets the NFQUEUE rules queue.
			{"-t", "mangle", "-A", "PREROUTING", "-p", "tcp", "--syn", "-m", "multiport", "--dports", "8080,8081", "-m", "comment", "--comment", "after-queue"},
			{"-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--syn", "--dport", "8080", "-m", "comment", "--comment", "nat-prerouting"},
			{"-t", "mangle", "-A", "INPUT", "-p", "tcp", "--syn", "--dport", "8080", "-m", "mark", "--mark", "0x4b470005", "-m", "comment", "--comment", "marked-8080"},
			{"-t", "mangle", "-A", "INPUT", "-p", "tcp", "--syn", "--dport", "8080", "-m", "comment", "--comment", "all-8080"},
			{"-t", "mangle", "-A", "INPUT", "-p", "tcp", "--syn", "--dport", "8081", "-m", "comment", "--comment", "all-8081"},
		} {
			mustRun(t, "ip", append([]string{"netns", "exec", srv, ipt}, r...)...)
		}
	}
	inNamespace(t, srv, func() {
		for _, addr := range []netip.Addr{srvAddr4, srvAddr6} {
			if !listenAndClose(t, netip.AddrPortFrom(addr, 8080)) {
				return
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	startQueue(t, srv, Config{AcceptMark: 0x4b470000, AcceptMask: 0xffff0000}, &recordingDecider{})

	for _, fam := range []struct {
		name, ipt string
		srv       netip.Addr
	}{
		{"ipv4", "iptables", srvAddr4},
		{"ipv6", "ip6tables", srvAddr6},
	} {
		t.Run(fam.name, func(t *testing.T) {
			if err := ncZ(cli, fam.srv, 8080); err != nil {
				t.Errorf("connect to %v port 8080 (accepted): %v", fam.srv, err)
			}
			if err := ncZ(cli, fam.srv, 8081); err == nil {
				t.Errorf("connect to %v port 8081 (dropped) succeeded", fam.srv)
			}
			c := counters(t, srv, fam.ipt, "mangle", "nat")
			t.Logf("counters: %v", c)
			if c["all-8080"] != 1 || c["marked-8080"] != 1 {
				t.Errorf("mangle INPUT saw %d SYNs to 8080, %d with mark 0x4b470005; want 1 and 1", c["all-8080"], c["marked-8080"])
			}
			if c["nat-prerouting"] != 1 {
				t.Errorf("nat PREROUTING saw %d SYNs to 8080, want 1: an accepted packet goes on to the next hook", c["nat-prerouting"])
			}
			if c["after-queue"] != 0 {
				t.Errorf("the rule after NFQUEUE in mangle PREROUTING counted %d packets, want 0: a verdict skips the rest of the chain", c["after-queue"])
			}
			if c["all-8081"] != 0 {
				t.Errorf("mangle INPUT saw %d dropped SYNs to 8081, want 0", c["all-8081"])
			}
		})
	}
}

// TestQueueFailOpenWhenFull checks NFQA_CFG_F_FAIL_OPEN: with the queue full
// the kernel accepts the packets that do not fit, without asking the gate
// and so without the accept mark, which is what lets a later rule tell them
// from packets the gate accepted.
func TestQueueFailOpenWhenFull(t *testing.T) {
	const burst = 20
	srv, cli := gateNamespaces(t)
	for _, r := range [][]string{
		{"-t", "mangle", "-A", "INPUT", "-p", "udp", "--dport", "9000", "-m", "mark", "--mark", "0x4b470000/0xffff0000", "-m", "comment", "--comment", "marked"},
		{"-t", "mangle", "-A", "INPUT", "-p", "udp", "--dport", "9000", "-m", "comment", "--comment", "all"},
	} {
		mustRun(t, "ip", append([]string{"netns", "exec", srv, "iptables"}, r...)...)
	}
	dec := &stallingDecider{release: make(chan struct{}), stalled: make(chan struct{})}
	q, _, _ := startQueue(t, srv, Config{FailOpen: true, MaxQueueLen: 1, AcceptMark: 0x4b470000, AcceptMask: 0xffff0000}, dec)
	released := false
	t.Cleanup(func() {
		if !released {
			close(dec.release)
		}
	})
	// An unconnected socket: nothing listens on 9000, and the port
	// unreachable errors that the accepted datagrams draw would fail the
	// next write on a connected one.
	to := netip.AddrPortFrom(srvAddr4, 9000)
	send := func(n int) {
		inNamespace(t, cli, func() {
			c, err := net.ListenUDP("udp", nil)
			if err != nil {
				t.Errorf("udp socket: %v", err)
				return
			}
			defer c.Close()
			for range n {
				if _, err := c.WriteToUDPAddrPort([]byte("overflow"), to); err != nil {
					t.Errorf("send udp: %v", err)
				}
			}
		})
	}
	send(1)
	select {
	case <-dec.stalled:
	case <-time.After(5 * time.Second):
		t.Fatal("first datagram never reached the decider")
	}
	// The first datagram is held by the decider, one more fills the queue
	// (MaxQueueLen 1); the rest find it full.
	send(burst)
	c := counters(t, srv, "iptables", "mangle")
	t.Logf("counters with the queue full: %v; stats %+v", c, q.Stats())
	if c["all"] != burst || c["marked"] != 0 {
		t.Errorf("mangle INPUT saw %d datagrams, %d marked; want %d, none marked", c["all"], c["marked"], burst)
	}
	close(dec.release)
	released = true
}

// TestQueueBindRefused runs a second Queue on a queue number another socket
// already serves: the kernel refuses the bind (EPERM, as for a missing
// capability), Run says so and returns, Ready stays open, and the first
// queue keeps serving.
func TestQueueBindRefused(t *testing.T) {
	srv, cli := gateNamespaces(t)
	dec := &countingDecider{}
	q, _, _ := startQueue(t, srv, Config{}, dec)

	var second *Queue
	if err := netns.Do(srv, func() error {
		var err error
		second, err = Open(Config{Queue: testQueueNum})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := second.Run(ctx, dec)
	if !errors.Is(err, syscall.EPERM) || !strings.Contains(err.Error(), fmt.Sprintf("failed to bind queue %d", testQueueNum)) ||
		!strings.Contains(err.Error(), "another program may serve this queue") {
		t.Errorf("Run on a queue already bound: %v, want failed to bind ... EPERM, with a hint", err)
	}
	select {
	case <-second.Ready():
		t.Error("Ready closed although the bind was refused")
	default:
	}

	before := q.Stats().Packets
	if _, err := dialUDPIn(t, cli, netip.AddrPortFrom(srvAddr4, 9000)).Write([]byte("still served")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for q.Stats().Packets == before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if q.Stats().Packets == before {
		t.Error("the first queue stopped serving after the refused bind")
	}
}

// counters returns the packet counters of the rules with a comment, by
// comment, in the given tables of ns.
func counters(t *testing.T, ns, ipt string, tables ...string) map[string]uint64 {
	t.Helper()
	m := make(map[string]uint64)
	for _, table := range tables {
		out := mustRun(t, "ip", "netns", "exec", ns, ipt, "-t", table, "-L", "-v", "-x", "-n")
		for _, line := range strings.Split(out, "\n") {
			_, after, ok := strings.Cut(line, "/* ")
			if !ok {
				continue
			}
			name, _, _ := strings.Cut(after, " */")
			var n uint64
			if _, err := fmt.Sscan(line, &n); err != nil {
				t.Fatalf("no counter in %q: %v", line, err)
			}
			m[name] += n
		}
	}
	return m
}

// stallingDecider drops everything, but holds the first packet until
// released, so the kernel's messages pile up in the socket.
type stallingDecider struct {
	release chan struct{}
	once    sync.Once
	stalled chan struct{}
}

func (d *stallingDecider) Decide(verdict.Packet, time.Time) verdict.Decision {
	d.once.Do(func() {
		close(d.stalled)
		<-d.release
	})
	return verdict.Decision{Verdict: verdict.Drop, Reason: verdict.ReasonNoGrant, Door: verdict.NoDoor, Reset: verdict.NoDoor}
}

// TestQueueENOBUFS stalls the receive goroutine while a burst fills a
// small receive buffer, and checks that the kernel's ENOBUFS is counted and
// that reading goes on afterwards.
func TestQueueENOBUFS(t *testing.T) {
	st := stalledBurst(t, Config{ReadBuffer: 64 << 10}, 3000)
	if st.ENOBUFS == 0 {
		t.Errorf("no ENOBUFS counted after a burst into a stalled queue with a small buffer: %+v", st)
	}
	if st.ReadErrors != 0 {
		t.Errorf("read errors besides ENOBUFS: %+v", st)
	}
}

// TestQueueDefaultReadBuffer checks that the default receive buffer holds
// the backlog a stalled queue builds, short of MaxQueueLen.
func TestQueueDefaultReadBuffer(t *testing.T) {
	const burst = 3000
	st := stalledBurst(t, Config{}, burst)
	if st.ENOBUFS != 0 || st.Packets < burst {
		t.Errorf("a burst of %d overflowed the default buffer: %+v", burst, st)
	}
}

// stalledBurst holds the decider on the first datagram, sends burst more
// to the server, then releases it, waits until the queue has read all it
// will, checks that reading goes on, and returns the stats.
func stalledBurst(t *testing.T, cfg Config, burst int) Stats {
	t.Helper()
	srv, cli := gateNamespaces(t)
	dec := &stallingDecider{release: make(chan struct{}), stalled: make(chan struct{})}
	q, _, _ := startQueue(t, srv, cfg, dec)
	released := false
	t.Cleanup(func() {
		if !released {
			close(dec.release)
		}
	})

	// Every datagram is NEW to conntrack, although all come from one
	// socket: the entry of the first is unconfirmed while it sits in the
	// queue, so each one is queued.
	c := dialUDPIn(t, cli, netip.AddrPortFrom(srvAddr4, 9000))
	send := func(n int) {
		for range n {
			if _, err := c.Write([]byte("flood")); err != nil {
				t.Fatalf("send udp: %v", err)
			}
		}
	}
	send(1)
	select {
	case <-dec.stalled:
	case <-time.After(5 * time.Second):
		t.Fatal("first datagram never reached the decider")
	}
	send(burst)
	close(dec.release)
	released = true

	// Wait for the counters to settle: the backlog read, and the ENOBUFS
	// (if any) reported by the receive after it.
	deadline := time.Now().Add(10 * time.Second)
	st := q.Stats()
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		next := q.Stats()
		// Receives goes on counting the loop's timed-out waits.
		if next.Packets == st.Packets && next.ENOBUFS == st.ENOBUFS && (next.ENOBUFS > 0 || next.Packets > uint64(burst)) {
			break
		}
		st = next
	}
	t.Logf("after a burst of %d: %+v", burst, st)
	t.Logf("kernel's view (queue, portid, waiting, copy mode, range, queue_dropped, user_dropped, last id, 1): %s",
		strings.TrimSpace(mustRun(t, "ip", "netns", "exec", srv, "cat", "/proc/net/netfilter/nfnetlink_queue")))

	send(1)
	for q.Stats().Packets == st.Packets && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if after := q.Stats(); after.Packets == st.Packets {
		t.Errorf("no packet read after the burst: %+v", after)
	}
	return st
}

// startQueue opens and runs a Queue in namespace ns until the test ends or
// stop is called; Run's result arrives on the channel.
func startQueue(t *testing.T, ns string, cfg Config, d Decider) (*Queue, <-chan error, context.CancelFunc) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Queue, cfg.Logger = testQueueNum, log
	// Opened in ns, the socket serves ns's queue wherever Run reads it.
	var q *Queue
	if err := netns.Do(ns, func() error {
		var err error
		q, err = Open(cfg)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		err := q.Run(ctx, d)
		close(done)
		runErr <- err
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		q.Close()
	})
	select {
	case <-q.Ready():
	case <-done:
		t.Fatalf("Run: %v", <-runErr)
	case <-time.After(5 * time.Second):
		t.Fatal("queue not ready after 5s")
	}
	return q, runErr, cancel
}

// gateNamespaces skips the test unless it can run, then builds the
// namespaces and installs the NFQUEUE rules in the server's.
func gateNamespaces(t *testing.T) (srv, cli string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and binds an NFQUEUE")
	}
	for _, tool := range []string{"ip", "iptables", "ip6tables", "nc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	srv, cli = makeNamespaces(t)
	for _, ipt := range []string{"iptables", "ip6tables"} {
		for _, proto := range []string{"tcp", "udp"} {
			mustRun(t, "ip", "netns", "exec", srv, ipt, "-t", "mangle", "-A", "PREROUTING",
				"-m", "conntrack", "--ctstate", "NEW", "-p", proto,
				"-j", "NFQUEUE", "--queue-num", fmt.Sprint(testQueueNum))
		}
	}
	return srv, cli
}

// makeNamespaces creates the server and client namespaces, joined by a veth
// pair, and removes them, with whatever runs in them, when the test ends.
func makeNamespaces(t *testing.T) (srv, cli string) {
	t.Helper()
	base := fmt.Sprintf("kg-gate-test-%d", os.Getpid())
	srv, cli = base+"-srv", base+"-cli"
	var lab netns.Lab
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	for _, ns := range []string{srv, cli} {
		if err := lab.Add(ns); err != nil {
			t.Fatal(err)
		}
	}
	if err := netns.Veth(
		netns.End{NS: srv, Dev: "s0", Addrs: []netip.Prefix{netip.PrefixFrom(srvAddr4, 24), netip.PrefixFrom(srvAddr6, 64)}},
		netns.End{NS: cli, Dev: "c0", Addrs: []netip.Prefix{netip.PrefixFrom(cliAddr4, 24), netip.PrefixFrom(cliAddr6, 64)}},
	); err != nil {
		t.Fatal(err)
	}
	return srv, cli
}

// ncZ tries a TCP connection from the namespace with a one second timeout.
func ncZ(ns string, addr netip.Addr, port uint16) error {
	_, err := netns.Run(10*time.Second, "", "ip", "netns", "exec", ns, "nc", "-z", "-w", "1", addr.String(), fmt.Sprint(port))
	return err
}

// inNamespace runs fn on an OS thread that has entered the named network
// namespace. Sockets fn creates stay in that namespace for their lifetime.
func inNamespace(t *testing.T, ns string, fn func()) {
	t.Helper()
	if err := netns.Do(ns, func() error { fn(); return nil }); err != nil {
		t.Error(err)
	}
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := netns.Run(time.Minute, "", name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// listenAndClose listens on at (in whatever namespace the calling thread is
// in) and closes every connection it accepts: the handshake is all these
// tests look at. It reports false, having failed t, when it cannot listen.
func listenAndClose(t *testing.T, at netip.AddrPort) bool {
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(at))
	if err != nil {
		t.Errorf("listen on %s: %v", at, err)
		return false
	}
	t.Cleanup(func() { ln.Close() })
	netns.Serve(ln, nil)
	return true
}

// countingDecider drops everything and counts what it saw.
type countingDecider struct{ n atomic.Uint64 }

func (d *countingDecider) Decide(verdict.Packet, time.Time) verdict.Decision {
	d.n.Add(1)
	return verdict.Decision{Verdict: verdict.Drop, Reason: verdict.ReasonNoGrant, Door: verdict.NoDoor, Reset: verdict.NoDoor}
}

// TestQueueAllocsPerPacket measures the whole per-packet path through the
// kernel, the socket code included, in heap allocations per packet: the
// process's malloc count over a burst of datagrams, divided by the packets
// the queue served. Other goroutines (the test's own logging, the runtime)
// add a little, so the bound is loose; go-nfqueue's reader made 56
// (BENCHMARKS.md).
func TestQueueAllocsPerPacket(t *testing.T) {
	srv, cli := gateNamespaces(t)
	dec := &countingDecider{}
	q, _, _ := startQueue(t, srv, Config{}, dec)
	c := dialUDPIn(t, cli, netip.AddrPortFrom(srvAddr4, 9000))
	const burst = 3000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := q.Stats()
	for range burst {
		c.Write([]byte("count me"))
	}
	deadline := time.Now().Add(10 * time.Second)
	for q.Stats().Packets-start.Packets < burst && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	runtime.ReadMemStats(&after)
	st := q.Stats()
	served := st.Packets - start.Packets
	if served < burst/2 {
		t.Fatalf("only %d of %d datagrams served: %+v", served, burst, st)
	}
	per := float64(after.Mallocs-before.Mallocs) / float64(served)
	t.Logf("%d packets, %.3f allocations per packet; %d receives, %d sends: %.3f system calls per packet",
		served, per, st.Receives-start.Receives, st.Sends-start.Sends,
		float64(st.Receives-start.Receives+st.Sends-start.Sends)/float64(served))
	if per > 0.1 {
		t.Errorf("%.3f allocations per packet through the kernel, want about 0", per)
	}
}

// dialUDPIn opens a UDP socket in namespace ns connected to to.
func dialUDPIn(t *testing.T, ns string, to netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	inNamespace(t, ns, func() {
		var err error
		if c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to)); err != nil {
			t.Errorf("dial udp: %v", err)
		}
	})
	if c == nil {
		t.FailNow()
	}
	t.Cleanup(func() { c.Close() })
	return c
}
