package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knockgate/knockgate/internal/netns"
	"github.com/knockgate/knockgate/internal/nfqstat"
)

// The lab: two namespaces joined by one veth pair, nothing in the host's
// own namespace. Names start with kgb (the integration tests use kgt).
//
//	kgb-c  eth0 203.0.113.10/24 2001:db8:1::10/64  (load generator, connect probe)
//	  │
//	kgb-gw kgb0 203.0.113.1/24  2001:db8:1::1/64   (the queue, its consumer, a listener on :80)
//
// The gateway routes the spoofed sources (198.51.100.0/24,
// 2001:db8:ff00::/40) back to the client, which is no router and drops
// the SYN-ACKs and RSTs addressed to them.
const (
	nsClient = "kgb-c"
	nsGW     = "kgb-gw"
	gwAddr4  = "203.0.113.1"
	gwAddr6  = "2001:db8:1::1"
	cAddr4   = "203.0.113.10"
	cAddr6   = "2001:db8:1::10"
	spoof4   = "198.51.100.0/24"
	spoof6   = "2001:db8:ff00::/40"
	// spoofWide4 is the benchmarking range (RFC 2544), for the scaling
	// rows: --queue-balance hashes the addresses alone, and 256 sources
	// split unevenly between two queues (by some 5-10 %), which would
	// make the 2-queue figure partly a measure of the hash; 131,072
	// sources split within a fraction of a per cent.
	spoofWide4 = "198.18.0.0/15"

	// Ports on the gateway: latency connects go to a listener on
	// listenPort; throughput SYNs go to openPort, where nothing listens
	// (the gateway answers with a RST, cheaper than a SYN-ACK and a
	// half-open socket); both are ports no door names. protectedPort is
	// one a door opens, knockPort the first knock of a door.
	listenPort    = 80
	openPort      = 8080
	protectedPort = 22
	knockPort     = 7000
)

// steering is which NFQUEUE rule the gateway's KGB chain holds.
type steering int

const (
	steerNone     steering = iota // empty chain: nothing is queued
	steerQueue0                   // --queue-num 0
	steerBalance2                 // --queue-balance 0:1
)

// sysctl is a global value the bench changed, to put back on exit.
type sysctl struct {
	Path string `json:"path"`
	Old  string `json:"old"`
}

type lab struct {
	savePath string // the sysctls to restore, should we die unannounced
	nets     netns.Lab

	mu       sync.Mutex
	procs    []*exec.Cmd
	restored []sysctl
	listener *exec.Cmd
	self     string
}

// procCmd builds a command in namespace ns pinned to cpus ("" = any).
// ip netns exec and taskset both exec, so the process's pid is the
// program's own.
func procCmd(ctx context.Context, ns, cpus string, name string, args ...string) *exec.Cmd {
	full := []string{"netns", "exec", ns}
	if cpus != "" {
		full = append(full, "taskset", "-c", cpus)
	}
	full = append(full, name)
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGKILL) }
	return cmd
}

// run runs a lab command, bounded by a minute, for its output.
func run(name string, args ...string) (string, error) {
	return netns.Run(time.Minute, "", name, args...)
}

// runIn runs a lab command with stdin as its standard input.
func runIn(stdin string, name string, args ...string) error {
	_, err := netns.Run(time.Minute, stdin, name, args...)
	return err
}

// runLock keeps a second run from starting while one runs: the lab's
// namespace names are fixed, and a second run's restoreStale would kill
// the first one's consumers, delete its namespaces and put back the
// sysctl it raised.
const runLock = "/run/knockgate-bench.lock"

// lock takes the run lock at path, or says that another run holds it. The
// lock goes with the process, however it ends.
func lock(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("failed to open the run lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another bench run holds %s (namespaces %s, %s): %w", path, nsClient, nsGW, err)
	}
	return func() { f.Close() }, nil
}

// restoreStale puts back sysctls that a previous run changed and could not
// restore (it was killed), and removes its namespaces.
func restoreStale(savePath string) {
	if b, err := os.ReadFile(savePath); err == nil {
		var old []sysctl
		if json.Unmarshal(b, &old) == nil {
			for i := len(old) - 1; i >= 0; i-- {
				if os.WriteFile(old[i].Path, []byte(old[i].Old), 0o644) == nil {
					fmt.Printf("restored %s=%s left by an earlier run\n", old[i].Path, old[i].Old)
				}
			}
		}
		os.Remove(savePath)
	}
	removeNamespaces()
}

// removeNamespaces kills every process left in the lab's namespaces and
// deletes them.
func removeNamespaces() {
	for _, ns := range []string{nsClient, nsGW} {
		if err := netns.Remove(ns); err != nil {
			fmt.Fprintln(os.Stderr, "cleanup:", err)
		}
	}
}

// setGlobal sets a global (init namespace) sysctl file, remembering the old
// value on disk first so that even a killed run is undone by the next.
func (l *lab) setGlobal(path, val string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	old := strings.TrimSpace(string(b))
	l.mu.Lock()
	l.restored = append(l.restored, sysctl{path, old})
	js, _ := json.Marshal(l.restored)
	l.mu.Unlock()
	if err := os.WriteFile(l.savePath, js, 0o600); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(val), 0o644)
}

func newLab(savePath, self string) (*lab, error) {
	l := &lab{savePath: savePath, self: self}
	if err := l.setup(); err != nil {
		l.teardown()
		return nil, err
	}
	return l, nil
}

func (l *lab) setup() error {
	for _, ns := range []string{nsClient, nsGW} {
		if err := l.nets.Add(ns); err != nil {
			return err
		}
		// Without DAD the veth's IPv6 link-local address is usable at
		// once; with it, IPv6 stays mute for a second or two after link
		// up, and a trial that starts with IPv6 (the knock flood, when
		// the sections before it are skipped) loses every packet.
		if _, err := run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"); err != nil {
			return err
		}
	}
	// Created inside the namespaces: the host's interfaces are never touched.
	p := netip.MustParsePrefix
	if err := netns.Veth(
		netns.End{NS: nsGW, Dev: "kgb0", Addrs: []netip.Prefix{p(gwAddr4 + "/24"), p(gwAddr6 + "/64")}},
		netns.End{NS: nsClient, Dev: "eth0", Addrs: []netip.Prefix{p(cAddr4 + "/24"), p(cAddr6 + "/64")}},
	); err != nil {
		return err
	}
	for _, s := range [][]string{
		{"ip", "-n", nsGW, "route", "add", spoof4, "via", cAddr4},
		{"ip", "-n", nsGW, "route", "add", spoofWide4, "via", cAddr4},
		{"ip", "-n", nsGW, "-6", "route", "add", spoof6, "via", cAddr6},
		{"ip", "netns", "exec", nsGW, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.kgb0.rp_filter=0", "net.ipv4.tcp_syncookies=1"},
		// The client is no router: replies to the spoofed sources die there.
		{"ip", "netns", "exec", nsClient, "sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"},
	} {
		if _, err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	// The static steering rules: every NEW TCP connection to the gateway
	// itself goes through chain KGB, whose one rule (or none) setSteering
	// swaps between trials.
	rules := "*mangle\n:KGB - [0:0]\n-A PREROUTING ! -i lo -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW -p tcp -j KGB\nCOMMIT\n"
	if err := runIn(rules, "ip", "netns", "exec", nsGW, "iptables-restore", "--noflush"); err != nil {
		return err
	}
	if err := runIn(rules, "ip", "netns", "exec", nsGW, "ip6tables-restore", "--noflush"); err != nil {
		return err
	}
	// A counter, no target, of the SYNs to openPort that reach filter
	// INPUT: those the consumer accepted (an accept verdict resumes the
	// packet at the next hook). Drain mode checks the drained packets
	// against it.
	if err := runIn("*filter\n-A INPUT -p tcp --dport "+strconv.Itoa(openPort)+" --tcp-flags SYN,ACK,RST,FIN SYN\nCOMMIT\n",
		"ip", "netns", "exec", nsGW, "iptables-restore", "--noflush"); err != nil {
		return err
	}
	// Conntrack is now live in the gateway namespace. Short timeouts (per
	// namespace) keep ~100k new flows a second from filling the table:
	// every flow here ends with a RST or is never answered.
	if _, err := run("ip", "netns", "exec", nsGW, "sysctl", "-qw",
		"net.netfilter.nf_conntrack_tcp_timeout_syn_sent=2",
		"net.netfilter.nf_conntrack_tcp_timeout_syn_recv=2",
		"net.netfilter.nf_conntrack_tcp_timeout_close=1",
		"net.netfilter.nf_conntrack_tcp_timeout_time_wait=1",
		"net.netfilter.nf_conntrack_tcp_timeout_established=10",
		"net.netfilter.nf_conntrack_tcp_timeout_fin_wait=1",
		"net.netfilter.nf_conntrack_tcp_timeout_close_wait=1",
		"net.netfilter.nf_conntrack_tcp_timeout_last_ack=1",
	); err != nil {
		return err
	}
	// nf_conntrack_max is global (it caps every namespace's table):
	// raised for the run, restored on exit.
	const wantMax = 1 << 20
	if b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_max"); err == nil {
		if cur, _ := strconv.Atoi(strings.TrimSpace(string(b))); cur < wantMax {
			if err := l.setGlobal("/proc/sys/net/netfilter/nf_conntrack_max", strconv.Itoa(wantMax)); err != nil {
				return fmt.Errorf("nf_conntrack_max: %w", err)
			}
		}
	}
	// A listener for the latency probe; its pid also anchors the
	// gateway's /proc/<pid>/net view.
	cmd := procCmd(context.Background(), nsGW, "", l.self, "probe-listen", "-port", strconv.Itoa(listenPort))
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return err
	}
	l.track(cmd)
	l.listener = cmd
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if !strings.HasPrefix(line, "listening") {
		return fmt.Errorf("listener did not start: %q", line)
	}
	go func() { bufio.NewReader(stdout).WriteTo(discard{}) }()
	return nil
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

func (l *lab) track(c *exec.Cmd) {
	l.mu.Lock()
	l.procs = append(l.procs, c)
	l.mu.Unlock()
}

// gwPID is a process inside the gateway namespace, for /proc/<pid>/net.
func (l *lab) gwPID() int { return l.listener.Process.Pid }

// setSteering puts the rule for mode in chain KGB (IPv4 and IPv6).
func (l *lab) setSteering(mode steering) error {
	var rule string
	switch mode {
	case steerQueue0:
		rule = "-A KGB -j NFQUEUE --queue-num 0\n"
	case steerBalance2:
		rule = "-A KGB -j NFQUEUE --queue-balance 0:1\n"
	}
	in := "*mangle\n:KGB - [0:0]\n" + rule + "COMMIT\n"
	if err := runIn(in, "ip", "netns", "exec", nsGW, "iptables-restore", "--noflush"); err != nil {
		return err
	}
	return runIn(in, "ip", "netns", "exec", nsGW, "ip6tables-restore", "--noflush")
}

// teardown kills what the bench started, deletes its namespaces and puts
// back the global sysctls. Safe to call more than once.
func (l *lab) teardown() {
	l.mu.Lock()
	procs := l.procs
	l.procs = nil
	restored := l.restored
	l.restored = nil
	l.mu.Unlock()
	for _, c := range procs {
		if c.Process != nil && c.ProcessState == nil {
			syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			c.Process.Kill()
		}
	}
	if err := l.nets.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "cleanup:", err)
	}
	for i := len(restored) - 1; i >= 0; i-- {
		if err := os.WriteFile(restored[i].Path, []byte(restored[i].Old), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "failed to restore %s=%s: %v\n", restored[i].Path, restored[i].Old, err)
		}
	}
	if len(restored) > 0 {
		os.Remove(l.savePath)
	}
}

// readQueues reads the gateway's queue table through a process inside it.
func readQueues(pid int) (map[uint16]nfqstat.Queue, error) {
	qs, err := nfqstat.Read(fmt.Sprintf("/proc/%d/net/netfilter/nfnetlink_queue", pid))
	if err != nil {
		return nil, err
	}
	m := make(map[uint16]nfqstat.Queue, len(qs))
	for _, q := range qs {
		m[q.Number] = q
	}
	return m, nil
}

// acceptedSYNs is the packet count of the filter INPUT counter rule: SYNs
// to openPort the consumer accepted (IPv4).
func acceptedSYNs() (uint64, error) {
	out, err := run("ip", "netns", "exec", nsGW, "iptables", "-t", "filter", "-L", "INPUT", "-n", "-v", "-x")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "dpt:"+strconv.Itoa(openPort)) {
			f := strings.Fields(line)
			if len(f) > 0 {
				return strconv.ParseUint(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no counter rule for tcp/%d in the gateway's filter INPUT", openPort)
}
