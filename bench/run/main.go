// Command run is `make bench`: it builds the bench's programs, measures
// knockgate against a minimal go-nfqueue consumer (bench/refgo) and a
// minimal libnetfilter_queue consumer (bench/refc) side by side in one
// network-namespace lab, runs the engine's microbenchmarks and
// bench/knockopen, writes bench/results/<date>.md and prints a summary.
// It needs root. Every figure it claims is a ratio of medians measured in
// the same run, the consumers alternating round by round.
//
// Traffic goes only to addresses inside the namespaces it creates (kgb-c,
// kgb-gw); every flood is bounded in packets and time. On any exit,
// SIGINT and SIGTERM included, it kills what it started, deletes its
// namespaces and restores the one global sysctl it raises
// (net.netfilter.nf_conntrack_max); a run killed outright is undone by
// the next.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

type options struct {
	rounds       int
	window       time.Duration
	latencyN     int
	searchSteps  int
	outDir       string
	buildDir     string
	knockgate    string
	genCPU       string
	consCPU      string
	skip         string
	knockopenMax time.Duration
	noBuild      bool
	hold         bool
	drainFill    int
	drainPoll    time.Duration
	drainPollCPU int
	drainPerf    string
}

func main() {
	if len(os.Args) > 1 {
		var err error
		switch os.Args[1] {
		case "probe-listen":
			err = probeListen(os.Args[2:])
		case "probe-connect":
			err = probeConnect(os.Args[2:])
		default:
			goto orchestrate
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, os.Args[1]+":", err)
			os.Exit(1)
		}
		return
	}
orchestrate:
	var o options
	flag.IntVar(&o.rounds, "rounds", 5, "rounds of every comparison; each round runs every consumer once, alternating")
	flag.DurationVar(&o.window, "window", 1200*time.Millisecond, "length of a flat-out throughput trial")
	flag.IntVar(&o.latencyN, "latency-n", 5000, "sequential connects per latency trial")
	flag.IntVar(&o.searchSteps, "search-steps", 5, "bisection steps of the sustainable-rate search, per consumer")
	flag.StringVar(&o.outDir, "out", "bench/results", "where <date>.md goes")
	flag.StringVar(&o.buildDir, "build", "bench/.build", "build directory for the bench's programs (not committed)")
	flag.StringVar(&o.knockgate, "knockgate", "bin/knockgate", "knockgate binary (built with make build unless -no-build)")
	flag.StringVar(&o.genCPU, "gen-cpu", "0", "CPU list for the load generator and the connect probe")
	flag.StringVar(&o.consCPU, "cons-cpu", "1", "CPU list for the consumer under test")
	flag.StringVar(&o.skip, "skip", "", "comma-separated sections to skip: micro,throughput,sustainable,latency,drain,scaling,flood,reloadmem,knockopen,cluster")
	flag.IntVar(&o.drainFill, "drain-fill", 15000, "drain mode: packets queued per queue before the consumer resumes (the queue holds 16384)")
	flag.DurationVar(&o.drainPoll, "drain-poll", time.Millisecond, "drain mode: interval between reads of nfnetlink_queue (at most 1ms; every 100µs near the end)")
	flag.IntVar(&o.drainPollCPU, "drain-poll-cpu", 0, "drain mode: CPU the poller thread is pinned to; -1 leaves it unpinned")
	flag.DurationVar(&o.knockopenMax, "knockopen-timeout", 150*time.Second, "time limit for go run ./bench/knockopen")
	flag.BoolVar(&o.noBuild, "no-build", false, "use the existing bin/knockgate instead of running make build")
	flag.BoolVar(&o.hold, "hold", false, "debugging: build the lab with the queue rule, print its paths and wait for SIGINT")
	flag.StringVar(&o.drainPerf, "drain-perf", "", "drain mode, diagnosis: write a system-wide perf record of every drain into this directory (perf's cost lowers the figures)")
	flag.Parse()
	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		os.Exit(2)
	}
	os.Exit(orchestrate(o))
}

// check bounds the flags that set how many trials run and how long each
// may take, so that every run ends.
func (o options) check() error {
	switch {
	case o.rounds < 1 || o.rounds > 100:
		return fmt.Errorf("-rounds %d: must be 1-100", o.rounds)
	case o.window <= 0 || o.window > 10*time.Minute:
		return fmt.Errorf("-window %v: must be above 0 and at most 10m (loadgen's limit)", o.window)
	case o.latencyN < 1 || o.latencyN > 1_000_000:
		return fmt.Errorf("-latency-n %d: must be 1-1000000", o.latencyN)
	case o.searchSteps < 0 || o.searchSteps > 20:
		return fmt.Errorf("-search-steps %d: must be 0-20", o.searchSteps)
	case o.knockopenMax <= 0 || o.knockopenMax > 30*time.Minute:
		return fmt.Errorf("-knockopen-timeout %v: must be above 0 and at most 30m", o.knockopenMax)
	case o.drainFill < 1 || o.drainFill > 16384:
		return fmt.Errorf("-drain-fill %d: must be 1-16384 (the queue holds 16384)", o.drainFill)
	case o.drainPoll <= 0 || o.drainPoll > time.Millisecond:
		return fmt.Errorf("-drain-poll %v: must be above 0 and at most 1ms", o.drainPoll)
	case o.drainPollCPU < -1:
		return fmt.Errorf("-drain-poll-cpu %d: must be a CPU number, or -1 for none", o.drainPollCPU)
	}
	return nil
}

func (o options) skipped(s string) bool {
	for _, f := range strings.Split(o.skip, ",") {
		if strings.TrimSpace(f) == s {
			return true
		}
	}
	return false
}

func orchestrate(o options) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "make bench needs root (network namespaces, iptables, NFQUEUE)")
		return 1
	}
	if _, err := os.Stat("go.mod"); err != nil {
		fmt.Fprintln(os.Stderr, "run from the repository root")
		return 1
	}
	unlock, err := lock(runLock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer unlock()
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	buildDir, _ := filepath.Abs(o.buildDir)
	scratch := filepath.Join(buildDir, "scratch")
	os.RemoveAll(scratch)
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	savePath := filepath.Join(buildDir, "kgb-sysctl-restore.json")
	restoreStale(savePath)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	began := time.Now()
	rep := &report{date: began.Format("2006-01-02"), began: began, opts: o}
	rep.machine = machineInfo()
	rep.loadStart = loadavg()
	step := func(format string, args ...any) {
		fmt.Printf("[%5.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}

	// Build.
	kg, _ := filepath.Abs(o.knockgate)
	if !o.noBuild {
		step("make build")
		if out, err := exec.CommandContext(ctx, "make", "build").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "make build: %v\n%s", err, out)
			return 1
		}
	}
	b := &bench{dir: scratch, kg: kg, genCPU: o.genCPU, consCPU: o.consCPU,
		loadgen: filepath.Join(buildDir, "loadgen"), refgo: filepath.Join(buildDir, "refgo"),
		peer: filepath.Join(buildDir, "clusterpeer")}
	if o.drainPerf != "" {
		b.perfDir, _ = filepath.Abs(o.drainPerf)
		if err := os.MkdirAll(b.perfDir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	for _, p := range []struct{ out, pkg string }{{b.loadgen, "./bench/loadgen"}, {b.refgo, "./bench/refgo"}, {b.peer, "./bench/clusterpeer"}} {
		step("go build %s", p.pkg)
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", p.out, p.pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", p.pkg, err, out)
			return 1
		}
	}
	step("gcc bench/refc/refc.c")
	refc := filepath.Join(buildDir, "refc")
	if out, err := exec.CommandContext(ctx, "gcc", "-O2", "-Wall", "-pthread", "-o", refc, "bench/refc/refc.c", "-lnetfilter_queue").CombinedOutput(); err != nil {
		rep.notes = append(rep.notes, fmt.Sprintf("The C reference (bench/refc) did not build, so its rows are missing: %v %s", err, strings.TrimSpace(string(out))))
		fmt.Fprintf(os.Stderr, "gcc refc: %v\n%s", err, out)
	} else {
		b.refc = refc
	}
	rep.kgVersion = strings.TrimSpace(outputOf(kg, "version"))

	// 1. Engine microbenchmarks (no root needed, no lab).
	if !o.skipped("micro") {
		step("section 1: go test -bench (verdict, gate)")
		rep.micro, rep.microErr = microbench(ctx)
		rep.bytesPerSource = bytesPerSource()
	}
	// 7. Cluster propagation (no root, no lab), while the machine is quiet.
	if !o.skipped("cluster") {
		step("section 7: %s; %s", clusterBenchCmd, clusterConvergeCmd)
		rep.cluster, rep.clusterErr = clusterBench(ctx)
	}
	if ctx.Err() != nil {
		return interrupted()
	}

	// The lab, torn down on every way out of this function; a second
	// signal, or a run that will not stop, still gets it torn down.
	step("lab: namespaces %s, %s", nsClient, nsGW)
	l, err := newLab(savePath, self)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		return 1
	}
	b.lab = l
	var once sync.Once
	teardown := func() { once.Do(l.teardown) }
	defer teardown()
	go func() {
		<-ctx.Done()
		time.Sleep(20 * time.Second)
		teardown()
		fmt.Fprintln(os.Stderr, "interrupted: lab torn down")
		os.Exit(130)
	}()

	if o.hold {
		if err := b.setSteering(steerQueue0); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("lab up; gateway /proc: /proc/%d/net/netfilter/nfnetlink_queue; loadgen %s, refgo %s, refc %s; SIGINT ends it\n", l.gwPID(), b.loadgen, b.refgo, b.refc)
		<-ctx.Done()
		return 0
	}
	measure(ctx, o, b, rep, step)
	if !o.skipped("reloadmem") && ctx.Err() == nil {
		step("section 6: RSS across %d reloads", reloadReloads)
		rep.reloadMem, rep.reloadMemErr = reloadMemory(ctx, kg, nsGW, scratch)
	}
	teardown()
	if ctx.Err() != nil {
		return interrupted()
	}

	// 4. Knock-to-open, from the other helper's program.
	if !o.skipped("knockopen") {
		step("section 4: go run ./bench/knockopen (up to %v)", o.knockopenMax)
		rep.knockopen, rep.knockopenErr = knockopen(ctx, kg, o.knockopenMax)
	}
	if ctx.Err() != nil {
		return interrupted()
	}
	rep.took = time.Since(began)
	rep.loadEnd = loadavg()
	path, err := rep.write(o.outDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		return 1
	}
	fmt.Println()
	fmt.Print(rep.summary())
	fmt.Printf("\nreport: %s (%.0fs)\n", path, rep.took.Seconds())
	return 0
}

func interrupted() int {
	fmt.Fprintln(os.Stderr, "interrupted")
	return 130
}

func outputOf(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "?"
	}
	return string(out)
}

// knockopen runs section 4's program and returns its markdown.
func knockopen(ctx context.Context, kg string, limit time.Duration) (string, error) {
	if _, err := os.Stat("bench/knockopen"); err != nil {
		return "", fmt.Errorf("bench/knockopen is not in this tree")
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", "./bench/knockopen", "-knockgate", kg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) }
	cmd.WaitDelay = 15 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tail := stderr.String()
		if len(tail) > 600 {
			tail = "..." + tail[len(tail)-600:]
		}
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("stopped after %v", limit)
		}
		return string(out), fmt.Errorf("%v: %s", err, strings.TrimSpace(tail))
	}
	return string(out), nil
}
