// Command knockopen measures knock-to-open time, knockgate against Debian's
// knockd configured the classic way (issue 6, item 4): the time from the
// last knock packet sent to the first accepted connect to the protected
// port, many trials each, alternating, in one run.
//
// It builds its own network namespaces (kgk<pid>-*), runs both products in
// their own gateway namespace, sends every packet from its client
// namespace to those gateways only, and removes everything on exit. Root
// only. It prints a markdown fragment on stdout and progress on stderr.
//
//	go build -o /tmp/knockopen ./bench/knockopen && sudo /tmp/knockopen -knockgate bin/knockgate
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

var (
	knockSeq  = []int{7000, 8000, 9000}
	protected = 22
)

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "knockopen: "+format+"\n", args...)
}

type options struct {
	knockgate string
	knockd    string
	trials    int
	budget    time.Duration
	gap       time.Duration
	probe     probeConfig
	execRuns  int
	settle    time.Duration
	jitter    time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.knockgate, "knockgate", "bin/knockgate", "knockgate binary")
	flag.StringVar(&o.knockd, "knockd", "/usr/sbin/knockd", "Debian's knockd binary")
	flag.IntVar(&o.trials, "trials", 200, fmt.Sprintf("trials per product (1 to %d), each from a fresh source address", maxTrials))
	flag.DurationVar(&o.budget, "budget", 75*time.Second, "time for the trials; no new round starts after it")
	flag.DurationVar(&o.gap, "knock-gap", time.Millisecond, "pause between two knocks of a sequence")
	flag.DurationVar(&o.probe.interval, "probe-interval", 250*time.Microsecond, "a new connect attempt this often while probing")
	flag.DurationVar(&o.probe.attemptTimeout, "attempt-timeout", 20*time.Millisecond, "abandon a connect attempt unanswered for this long")
	flag.DurationVar(&o.probe.giveUp, "give-up", 2*time.Second, "a trial with no connect within this long of the last knock fails")
	flag.DurationVar(&o.settle, "settle", 20*time.Millisecond, "pause after each trial")
	flag.DurationVar(&o.jitter, "jitter", 50*time.Millisecond, "plus a random pause of up to this, so that trials meet knockd's 50 ms capture timer at random phases")
	flag.IntVar(&o.execRuns, "exec-runs", 30, "timed runs of knockd's iptables command alone (sh -c, in the knockd gateway), for the breakdown")
	flag.Parse()
	if o.trials < 1 || o.trials > maxTrials {
		fmt.Fprintf(os.Stderr, "knockopen: -trials must be 1 to %d\n", maxTrials)
		os.Exit(2)
	}
	if o.probe.interval <= 0 || o.probe.attemptTimeout <= 0 || o.probe.giveUp <= 0 || o.probe.giveUp > 10*time.Second {
		fmt.Fprintln(os.Stderr, "knockopen: -probe-interval and -attempt-timeout must be above 0, -give-up 0 to 10s")
		os.Exit(2)
	}
	if o.probe.giveUp/o.probe.interval > 100000 {
		fmt.Fprintln(os.Stderr, "knockopen: -probe-interval too small for -give-up (over 100,000 attempts)")
		os.Exit(2)
	}
	if o.budget <= 0 || o.budget > 10*time.Minute || o.gap < 0 || o.gap > time.Second || o.settle < 0 || o.settle > time.Second || o.jitter < 0 || o.jitter > time.Second {
		fmt.Fprintln(os.Stderr, "knockopen: -budget must be above 0 and at most 10m, -knock-gap, -settle and -jitter 0 to 1s")
		os.Exit(2)
	}
	if o.execRuns < 0 || o.execRuns > 1000 {
		fmt.Fprintln(os.Stderr, "knockopen: -exec-runs must be 0 to 1000")
		os.Exit(2)
	}
	if err := mainErr(o); err != nil {
		logf("error: %v", err)
		os.Exit(1)
	}
}

func mainErr(o options) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces, iptables, NFQUEUE)")
	}
	var err error
	if o.knockgate, err = filepath.Abs(o.knockgate); err != nil {
		return err
	}
	for _, p := range []string{o.knockgate, o.knockd} {
		if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
			return fmt.Errorf("%s: not an executable (build knockgate with make build; apt-get install knockd)", p)
		}
	}
	for _, tool := range []string{"ip", "iptables-restore", "/usr/sbin/iptables", "/bin/sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("needs %s: %v", tool, err)
		}
	}
	removeStale()
	l, err := newLab()
	if err != nil {
		return err
	}
	defer l.cleanup()
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigc)
	go func() {
		s, ok := <-sigc
		if !ok {
			return
		}
		logf("%v: cleaning up", s)
		l.cleanup()
		os.Exit(130)
	}()

	logf("building namespaces %s-{cl,kg,kd,bl} in %s", l.prefix, l.dir)
	if err := l.build(); err != nil {
		return err
	}
	if err := l.setupKnockgate(o.knockgate); err != nil {
		return fmt.Errorf("knockgate gateway: %w", err)
	}
	if err := l.setupKnockd(o.knockd); err != nil {
		return fmt.Errorf("knockd gateway: %w", err)
	}
	client, err := newWorker(l.ns("cl"))
	if err != nil {
		return err
	}
	defer client.stop()
	kdWorker, err := newWorker(l.ns("kd"))
	if err != nil {
		return err
	}
	defer kdWorker.stop()

	b := &bench{l: l, o: o, client: client, kd: kdWorker, loadBefore: loadavg()}
	if err := b.controls(); err != nil {
		return err
	}
	b.trials()
	b.grants[knockgate] = countLog(filepath.Join(l.dir, "knockgate.log"), "grant opened")
	b.grants[knockd] = countLog(filepath.Join(l.dir, "knockd.events.log"), "OPEN SESAME")
	b.execBreakdown()
	b.loadAfter = loadavg()
	b.report(os.Stdout)
	return nil
}

// setupKnockgate loads the steering rules that knockgate itself prints
// into the knockgate gateway and starts the daemon there.
func (l *lab) setupKnockgate(bin string) error {
	gw := l.ns("kg")
	out, err := run("", bin, "rules")
	if err != nil {
		return err
	}
	v4, _, ok := strings.Cut(out, "# ---- ip6tables-restore --noflush ----")
	if !ok || !strings.Contains(v4, "NFQUEUE --queue-num 0") {
		return fmt.Errorf("unexpected output of %s rules:\n%s", bin, out)
	}
	if _, err := run(v4, "ip", "netns", "exec", gw, "iptables-restore", "--noflush"); err != nil {
		return err
	}
	policy := fmt.Sprintf(`gate {
  queue          = 0
  state_file     = ""
  control_socket = %q
}

metrics {
  listen = ""
}

door "ssh" {
  sequence         = ["tcp/%d", "tcp/%d", "tcp/%d"]
  sequence_timeout = "5s"
  open             = ["tcp/%d"]
  open_for         = "5s"
}
`, filepath.Join(l.dir, "kg.sock"), knockSeq[0], knockSeq[1], knockSeq[2], protected)
	cfg := filepath.Join(l.dir, "policy.hcl")
	if err := os.WriteFile(cfg, []byte(policy), 0o600); err != nil {
		return err
	}
	if _, err := run("", bin, "validate", "--config", cfg); err != nil {
		return err
	}
	log, err := l.start(gw, "knockgate.log", bin, "run", "--config", cfg, "--log-level", "info")
	if err != nil {
		return err
	}
	if err := waitLog(log, "knockgate ready", 10*time.Second); err != nil {
		return err
	}
	logf("knockgate ready in %s", gw)
	return nil
}

// setupKnockd loads the classic static rules (established traffic in, new
// connections to the protected port dropped) and starts knockd in the
// foreground, whose door inserts an ACCEPT rule for the knocker's address.
func (l *lab) setupKnockd(bin string) error {
	gw := l.ns("kd")
	rules := fmt.Sprintf(`*filter
-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A INPUT -p tcp --dport %d -m conntrack --ctstate NEW -j DROP
COMMIT
`, protected)
	if _, err := run(rules, "ip", "netns", "exec", gw, "iptables-restore", "--noflush"); err != nil {
		return err
	}
	conf := fmt.Sprintf(`[options]
	LogFile   = %s
	Interface = wan

[openSSH]
	sequence    = %d:tcp,%d:tcp,%d:tcp
	seq_timeout = 5
	tcpflags    = syn
	command     = %s
`, filepath.Join(l.dir, "knockd.events.log"), knockSeq[0], knockSeq[1], knockSeq[2], knockdCommand("%IP%"))
	cfg := filepath.Join(l.dir, "knockd.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return err
	}
	// Foreground (no -d), no -v or -D: as deployed, logging to its file.
	if _, err := l.start(gw, "knockd.out.log", bin, "-i", "wan", "-c", cfg, "-p", filepath.Join(l.dir, "knockd.pid")); err != nil {
		return err
	}
	if err := waitLog(filepath.Join(l.dir, "knockd.events.log"), "listening on", 10*time.Second); err != nil {
		b, _ := os.ReadFile(filepath.Join(l.dir, "knockd.out.log"))
		return fmt.Errorf("%w\nknockd output:\n%s", err, b)
	}
	logf("knockd ready in %s", gw)
	return nil
}

func knockdCommand(ip string) string {
	return fmt.Sprintf("/usr/sbin/iptables -I INPUT -s %s -p tcp --dport %d -j ACCEPT", ip, protected)
}

// shell runs a command line as knockd's system(3) does, /bin/sh -c, for at
// most 10 s.
func shell(line string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "/bin/sh", "-c", line).Run()
}

// undoKnockd deletes the rule knockd's command inserted for ip.
func undoKnockd(ip string) error {
	return shell(strings.Replace(knockdCommand(ip), " -I ", " -D ", 1))
}

type product int

const (
	baseline product = iota
	knockgate
	knockd
	nProducts
)

func (p product) link() link { return links[[]int{2, 0, 1}[p]] }

type bench struct {
	l      *lab
	o      options
	client *nsWorker
	kd     *nsWorker

	results    [nProducts][]result
	closedOK   [nProducts]bool // the negative control: no knock, no connect
	grants     [nProducts]int  // grants the product logged, warm-up included
	rounds     int
	stoppedBy  string
	elapsed    time.Duration
	execTimes  []time.Duration
	execErrors int
	// loadBefore and loadAfter are the 1-minute load averages: other work
	// on the machine shows in the tails.
	loadBefore, loadAfter string
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// trial runs one measurement from client host number h.
func (b *bench) trial(p product, h int) result {
	k := p.link()
	src, dst := k.host(h), k.gw()
	var r result
	b.client.do(func() {
		if p == baseline {
			r = probe(src, dst, protected, time.Now(), b.o.probe)
			return
		}
		r = knockThenProbe(src, dst, knockSeq, b.o.gap, protected, b.o.probe)
	})
	if p == knockd {
		// Remove the rule knockd inserted, outside the measured time, so
		// that every trial meets the same ruleset.
		b.kd.do(func() {
			undoKnockd(src.String())
		})
	}
	return r
}

// controls checks that the protected port is closed to a source that has
// not knocked, then runs one uncounted warm-up trial per product.
func (b *bench) controls() error {
	closedCfg := b.o.probe
	closedCfg.giveUp = 300 * time.Millisecond
	for _, p := range []product{knockgate, knockd} {
		k := p.link()
		var r result
		b.client.do(func() { r = probe(k.host(closedHost), k.gw(), protected, time.Now(), closedCfg) })
		if r.err != nil {
			return fmt.Errorf("negative control: %w", r.err)
		}
		if r.ok {
			return fmt.Errorf("negative control: %s:%d accepted a connect from %s, which never knocked", k.gw(), protected, k.host(closedHost))
		}
		b.closedOK[p] = true
	}
	for p := range nProducts {
		r := b.trial(p, warmHost)
		if r.err != nil {
			return fmt.Errorf("warm-up: %w", r.err)
		}
		if !r.ok {
			return fmt.Errorf("warm-up trial of %s failed: no connect within %v", p.name(), b.o.probe.giveUp)
		}
		logf("warm-up %s: %v", p.name(), r.elapsed)
	}
	return nil
}

// trials runs rounds of one trial per product, in a shuffled order each
// round, until the count or the time budget is reached.
func (b *bench) trials() {
	start := time.Now()
	order := []product{baseline, knockgate, knockd}
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(start.UnixNano())))
	for i := 0; i < b.o.trials; i++ {
		if time.Since(start) > b.o.budget {
			b.stoppedBy = fmt.Sprintf("time budget %v reached after %d rounds", b.o.budget, i)
			logf("%s", b.stoppedBy)
			break
		}
		rng.Shuffle(len(order), func(a, c int) { order[a], order[c] = order[c], order[a] })
		for _, p := range order {
			r := b.trial(p, firstHost+i)
			b.results[p] = append(b.results[p], r)
			if r.err != nil {
				logf("round %d %s: %v", i+1, p.name(), r.err)
			}
			pause := b.o.settle
			if b.o.jitter > 0 {
				pause += time.Duration(rng.Int64N(int64(b.o.jitter)))
			}
			time.Sleep(pause)
		}
		b.rounds++
		if (i+1)%10 == 0 || i+1 == b.o.trials {
			logf("round %d/%d: knockgate p50 %v, knockd p50 %v", i+1, b.o.trials,
				summarize(b.results[knockgate]).p50, summarize(b.results[knockd]).p50)
		}
	}
	b.elapsed = time.Since(start)
}

// execBreakdown times knockd's command alone, the way knockd runs it
// (system(3): /bin/sh -c), inside the knockd gateway, then deletes the rule
// again: the part of knockd's delay that is fork, exec and iptables.
func (b *bench) execBreakdown() {
	src := links[1].host(closedHost).String()
	for i := 0; i < b.o.execRuns; i++ {
		var d time.Duration
		var err error
		b.kd.do(func() {
			t := time.Now()
			err = shell(knockdCommand(src))
			d = time.Since(t)
			undoKnockd(src)
		})
		if err != nil {
			b.execErrors++
			continue
		}
		b.execTimes = append(b.execTimes, d)
	}
}

func (p product) name() string {
	return [...]string{"no gate (baseline)", "knockgate", "knockd"}[p]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

func version(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func (b *bench) report(w io.Writer) {
	var s [nProducts]stats
	for p := range nProducts {
		s[p] = summarize(b.results[p])
	}
	fmt.Fprintf(w, "## 4. Knock-to-open: knockgate vs knockd\n\n")
	fmt.Fprintf(w, "Time from the last knock packet sent to the first completed TCP connect to the protected port (tcp/%d), "+
		"knock sequence tcp/%d, tcp/%d, tcp/%d as TCP SYNs %v apart, each trial from a fresh client address. "+
		"%d rounds of one trial per product in a shuffled order, %v plus a random 0 to %v between trials, %.1f s in all. "+
		"The prober starts a new connect (a new flow) every %v, abandons each after %v unanswered, and fails the trial after %v. "+
		"The baseline is the same prober against a gateway with no gate and no rules: the connect RTT.\n\n",
		protected, knockSeq[0], knockSeq[1], knockSeq[2], b.o.gap, b.rounds, b.o.settle, b.o.jitter, b.elapsed.Seconds(),
		b.o.probe.interval, b.o.probe.attemptTimeout, b.o.probe.giveUp)
	fmt.Fprintf(w, "| | trials | failures | p50 | p90 | p99 | min | max | connect attempts p50 / max |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range []product{baseline, knockgate, knockd} {
		x := s[p]
		if x.n == x.failures {
			fmt.Fprintf(w, "| %s | %d | %d | - | - | - | - | - | - |\n", p.name(), x.n, x.failures)
			continue
		}
		fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %s | %s | %s | %d / %d |\n", p.name(), x.n, x.failures,
			ms(x.p50), ms(x.p90), ms(x.p99), ms(x.min), ms(x.max), x.attemptsP50, x.attemptsMax)
	}
	fmt.Fprintln(w)
	kg, kd := s[knockgate], s[knockd]
	if kg.p50 > 0 && kd.p50 > 0 {
		ratio := float64(kd.p50) / float64(kg.p50)
		verdict := "met"
		if ratio < 100 {
			verdict = "**not met**"
		}
		fmt.Fprintf(w, "**knockd p50 / knockgate p50 = %.0f×** (target ≥ 100×: %s; p90 ratio %.0f×, p99 ratio %.0f×). ",
			ratio, verdict, float64(kd.p90)/float64(kg.p90), float64(kd.p99)/float64(kg.p99))
		if bl := s[baseline].p50; bl > 0 {
			fmt.Fprintf(w, "Above the baseline's p50: knockgate +%s, knockd +%s.\n\n", ms(kg.p50-bl), ms(kd.p50-bl))
		} else {
			fmt.Fprintln(w)
			fmt.Fprintln(w)
		}
	} else {
		fmt.Fprintf(w, "No ratio: a product had no successful trial.\n\n")
	}
	if len(b.execTimes) > 0 {
		et := append([]time.Duration(nil), b.execTimes...)
		sort.Slice(et, func(i, j int) bool { return et[i] < et[j] })
		fmt.Fprintf(w, "Breakdown of knockd's time: its command alone (`/bin/sh -c '%s'`, as system(3) runs it, in the knockd gateway, %d runs) "+
			"takes p50 %s, p90 %s. The rest of knockd's p50 above the baseline (%s) is mostly knockd waiting for the knocks: "+
			"knockd 0.8 opens its capture with `pcap_open_live(..., to_ms = 50)` and no immediate mode, and on Linux's TPACKET_V3 ring "+
			"the timeout is the block retire timer, so a knock waits 0 to 50 ms (25 ms on average) before knockd sees it; "+
			"then knockd forks, and the child runs the command.\n\n",
			knockdCommand("ADDR"), len(et), ms(pct(et, 50)), ms(pct(et, 90)), ms(max(0, kd.p50-pct(et, 50)-s[baseline].p50)))
	}
	var notes []string
	if b.closedOK[knockgate] && b.closedOK[knockd] {
		notes = append(notes, "negative control passed: with either product, a source that never knocked gets no connect in 300 ms")
	}
	notes = append(notes, fmt.Sprintf("grants logged, warm-up included: knockgate %d (`grant opened`), knockd %d (`OPEN SESAME`), for %d and %d successful trials",
		b.grants[knockgate], b.grants[knockd], s[knockgate].n-s[knockgate].failures+1, s[knockd].n-s[knockd].failures+1))
	if b.stoppedBy != "" {
		notes = append(notes, b.stoppedBy)
	}
	for p := range nProducts {
		if s[p].localErrors > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d local errors, first: %v", p.name(), s[p].localErrors, s[p].firstErr))
		}
	}
	if b.execErrors > 0 {
		notes = append(notes, fmt.Sprintf("%d timed iptables runs failed", b.execErrors))
	}
	for _, n := range notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	fmt.Fprintf(w, "- setup: knockgate %s (`knockgate run`, the rules `knockgate rules` prints, log level info); knockd %s, "+
		"`command = %s`, `tcpflags = syn`, rules `INPUT ESTABLISHED,RELATED ACCEPT`, `INPUT tcp dport %d NEW DROP`; %s; kernel %s; %d CPUs, load average %s before the trials, %s after; %s\n",
		strings.TrimPrefix(version(b.o.knockgate, "version"), "knockgate "), strings.TrimPrefix(version(b.o.knockd, "-V"), "knockd "), knockdCommand("%IP%"), protected,
		version("/usr/sbin/iptables", "-V"), strings.TrimSpace(version("uname", "-r")), runtime.NumCPU(), b.loadBefore, b.loadAfter, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "- reproduce: `go build -o /tmp/knockopen ./bench/knockopen && sudo /tmp/knockopen -knockgate bin/knockgate -trials %d`\n", b.o.trials)
}
