package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/knockgate/knockgate/internal/netns"
)

// The lab: one client namespace with three links, each to its own gateway
// namespace, so the two products never share a netfilter ruleset, and a
// third gateway with no gate at all gives the connect RTT baseline.
//
//	cl ──kg── kg (knockgate, 198.51.100.1)
//	   ──kd── kd (knockd,    203.0.113.1)
//	   ──bl── bl (no gate,   192.0.2.1)
//
// Every client source address and every gateway address is in a
// documentation range; traffic only ever goes to the gateways' addresses.
type link struct {
	name   string // the gateway namespace suffix and the client's interface name
	prefix string // the /24, as "198.51.100."
	gwMAC  string
	clMAC  string
}

var links = []link{
	{"kg", "198.51.100.", "02:6b:67:00:00:01", "02:6b:67:00:01:01"},
	{"kd", "203.0.113.", "02:6b:67:00:00:02", "02:6b:67:00:01:02"},
	{"bl", "192.0.2.", "02:6b:67:00:00:03", "02:6b:67:00:01:03"},
}

// Client host numbers in each /24: trials use firstHost..lastHost, one
// fresh source per trial; warmHost is the warm-up trial's source and
// closedHost the negative control's (a source that never knocked).
const (
	firstHost  = 10
	lastHost   = 249
	warmHost   = 250
	closedHost = 251
	maxTrials  = lastHost - firstHost + 1
)

func (k link) gw() netip.Addr { return netip.MustParseAddr(k.prefix + "1") }
func (k link) host(n int) netip.Addr {
	return netip.MustParseAddr(k.prefix + strconv.Itoa(n))
}

type lab struct {
	prefix string // namespace name prefix: kgk<pid>
	dir    string // temp dir: policy, configs, logs, control socket

	nets      netns.Lab
	mu        sync.Mutex
	procs     []*exec.Cmd
	listeners []net.Listener
	once      sync.Once
	// spawner is a locked OS thread in the host namespace that starts the
	// long-lived processes: their Pdeathsig fires when the thread that
	// forked them exits, and this one lives until cleanup.
	spawner *nsWorker
}

func (l *lab) ns(name string) string { return l.prefix + "-" + name }

// run runs a command with a bounded time and returns its combined output.
func run(stdin string, name string, args ...string) (string, error) {
	return netns.Run(20*time.Second, stdin, name, args...)
}

func newLab() (*lab, error) {
	l := &lab{prefix: fmt.Sprintf("kgk%d", os.Getpid())}
	dir, err := os.MkdirTemp("", "kgk-knockopen-")
	if err != nil {
		return nil, err
	}
	l.dir = dir
	if l.spawner, err = newWorker(""); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return l, nil
}

// removeStale deletes kgk namespaces left by an earlier run of this program
// that was killed hard (its pid, in the name, no longer runs).
func removeStale() {
	ents, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		rest, ok := strings.CutPrefix(name, "kgk")
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // still running
		}
		logf("removing stale namespace %s", name)
		if err := netns.Remove(name); err != nil {
			logf("%v", err)
		}
	}
}

func (l *lab) addNS(name string) error {
	ns := l.ns(name)
	if err := l.nets.Add(ns); err != nil {
		return err
	}
	// IPv4 only: no router solicitations, MLD or DAD on the links to
	// wake the gateways during a trial.
	_, err := run("", "ip", "netns", "exec", ns, "sysctl", "-qw",
		"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	return err
}

// build makes the namespaces and links, with permanent neighbour entries
// both ways, so that no trial pays for an ARP exchange (knockd's gateway
// answers knocks with RSTs and would resolve the client during the knock;
// knockgate drops knocks silently and would not).
func (l *lab) build() error {
	if err := l.addNS("cl"); err != nil {
		return err
	}
	cl := l.ns("cl")
	for _, k := range links {
		if err := l.addNS(k.name); err != nil {
			return err
		}
		gw := l.ns(k.name)
		if err := netns.Veth(
			netns.End{NS: gw, Dev: "wan", MAC: k.gwMAC, Addrs: []netip.Prefix{netip.PrefixFrom(k.gw(), 24)}},
			netns.End{NS: cl, Dev: k.name, MAC: k.clMAC},
		); err != nil {
			return err
		}
		var gb, cb strings.Builder
		fmt.Fprintf(&cb, "neigh replace %s1 lladdr %s dev %s nud permanent\n", k.prefix, k.gwMAC, k.name)
		for n := firstHost; n <= closedHost; n++ {
			// /32: one connected route per link, added below, rather
			// than one per address.
			fmt.Fprintf(&cb, "addr add %s%d/32 dev %s\n", k.prefix, n, k.name)
			fmt.Fprintf(&gb, "neigh replace %s%d lladdr %s dev wan nud permanent\n", k.prefix, n, k.clMAC)
		}
		fmt.Fprintf(&cb, "route add %s0/24 dev %s\n", k.prefix, k.name)
		if _, err := run(gb.String(), "ip", "-n", gw, "-batch", "-"); err != nil {
			return err
		}
		if _, err := run(cb.String(), "ip", "-n", cl, "-batch", "-"); err != nil {
			return err
		}
		// The protected port's listener, in the gateway.
		ln, err := netns.Listen(gw, "tcp4", "0.0.0.0:22")
		if err != nil {
			return err
		}
		l.mu.Lock()
		l.listeners = append(l.listeners, ln)
		l.mu.Unlock()
		netns.Serve(ln, nil)
	}
	return nil
}

// start runs a long-lived process in namespace ns with its output in a log
// file of the lab's dir.
func (l *lab) start(ns, logName string, name string, args ...string) (string, error) {
	logPath := filepath.Join(l.dir, logName)
	f, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer f.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	l.spawner.do(func() { err = cmd.Start() })
	if err != nil {
		return "", err
	}
	l.mu.Lock()
	l.procs = append(l.procs, cmd)
	l.mu.Unlock()
	return logPath, nil
}

// countLog counts the lines of a log that contain part.
func countLog(path, part string) int {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), part) {
			n++
		}
	}
	return n
}

// waitLog waits, bounded, for a line of a log that contains part.
func waitLog(path, part string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if f, err := os.Open(path); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if strings.Contains(sc.Text(), part) {
					f.Close()
					return nil
				}
			}
			f.Close()
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(path)
			return fmt.Errorf("no %q in %s within %v:\n%s", part, path, timeout, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cleanup stops every process, closes the listeners, deletes the
// namespaces and the temp dir. Safe to call more than once and from the
// signal handler.
func (l *lab) cleanup() {
	l.once.Do(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, ln := range l.listeners {
			ln.Close()
		}
		for _, p := range l.procs {
			if p.Process == nil {
				continue
			}
			// The process group: ip netns exec execs the program, which
			// may have children (knockd's commands).
			syscall.Kill(-p.Process.Pid, syscall.SIGTERM)
		}
		for _, p := range l.procs {
			if p.Process == nil {
				continue
			}
			done := make(chan struct{})
			go func() { p.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
				<-done
			}
		}
		if err := l.nets.Close(); err != nil {
			logf("cleanup: %v", err)
		}
		if l.dir != "" {
			os.RemoveAll(l.dir)
		}
		l.spawner.stop()
	})
}

// nsWorker is a goroutine on its own OS thread inside a namespace that runs
// the functions it is given, one at a time: the client's knocks and probes
// run there with no thread switch between them.
type nsWorker struct {
	jobs chan func()
}

func newWorker(ns string) (*nsWorker, error) {
	w := &nsWorker{jobs: make(chan func())}
	ready := make(chan error, 1)
	serve := func() error {
		ready <- nil
		for f := range w.jobs {
			f()
		}
		return nil
	}
	go func() {
		if ns == "" {
			// Never unlocked: the spawner's thread is the parent the
			// children's Pdeathsig follows, so it must outlive them.
			runtime.LockOSThread()
			serve()
			return
		}
		if err := netns.Do(ns, serve); err != nil {
			select {
			case ready <- err: // it never got into the namespace
			default:
			}
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return w, nil
}

func (w *nsWorker) do(f func()) {
	done := make(chan struct{})
	w.jobs <- func() { f(); close(done) }
	<-done
}

func (w *nsWorker) stop() { close(w.jobs) }
