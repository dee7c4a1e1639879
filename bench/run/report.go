package main

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

type report struct {
	date    string
	began   time.Time
	took    time.Duration
	opts    options
	machine []string

	kgVersion string
	notes     []string
	// /proc/loadavg at the start and the end: other work on the machine
	// shows here, and in the spread of the per-round figures.
	loadStart, loadEnd string

	micro          []microResult
	microErr       error
	bytesPerSource *bpsResult

	tput    []*row
	sustain []*search
	latency []*row
	drain   []*row
	scaling []*row
	flood   []*row

	kgQueuesUnsupported string

	knockopen    string
	knockopenErr error

	reloadMem    *reloadMem
	reloadMemErr error

	cluster    []microResult // cluster.go
	clusterErr error
}

// named is the row of rows called name, or nil.
func named(rows []*row, name string) *row {
	for _, x := range rows {
		if x.Name == name {
			return x
		}
	}
	return nil
}

// medianOf is the median of f over the row of rows called name, 0 when
// there is no such row.
func medianOf(rows []*row, name string, f func(trial) float64) float64 {
	if x := named(rows, name); x != nil {
		return x.med(f)
	}
	return 0
}

func machineInfo() []string {
	model := "?"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	commit := strings.TrimSpace(outputOf("git", "describe", "--always", "--dirty"))
	return []string{
		fmt.Sprintf("CPUs: %d (`nproc`: %s), %s", runtime.NumCPU(), strings.TrimSpace(outputOf("nproc")), model),
		"kernel: " + strings.TrimSpace(outputOf("uname", "-r")),
		"go: " + strings.TrimSpace(outputOf("go", "version")),
		"tree: " + commit,
	}
}

// Section 1.

type microResult struct {
	Name   string
	NsOp   float64
	BOp    float64
	Allocs float64
	Mem    bool     // B/op and allocs/op were reported
	Extra  []metric // b.ReportMetric's, in go test's order
}

type metric struct {
	V    float64
	Unit string
}

// parseBenchLine reads one result line of go test -bench -benchmem: the
// name (its -GOMAXPROCS suffix dropped), the iteration count, then value
// and unit pairs. Metrics a benchmark reports itself stand between ns/op
// and B/op, so the pairs are read by unit, not by position.
func parseBenchLine(line string) (microResult, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || len(f)%2 != 0 || !strings.HasPrefix(f[0], "Benchmark") {
		return microResult{}, false
	}
	if _, err := strconv.ParseUint(f[1], 10, 64); err != nil {
		return microResult{}, false
	}
	name := f[0]
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			name = name[:i]
		}
	}
	r := microResult{Name: name}
	var ns, bytes, allocs bool
	for i := 2; i < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return microResult{}, false
		}
		switch f[i+1] {
		case "ns/op":
			r.NsOp, ns = v, true
		case "B/op":
			r.BOp, bytes = v, true
		case "allocs/op":
			r.Allocs, allocs = v, true
		default:
			r.Extra = append(r.Extra, metric{v, f[i+1]})
		}
	}
	r.Mem = bytes && allocs
	return r, ns
}

func microbench(ctx context.Context) ([]microResult, error) {
	return goBench(ctx, 4*time.Minute, "-bench", ".", "-benchmem", "./verdict/", "./gate/")
}

// goBench runs go test -run '^$' with args, within limit, and reads its
// result lines; an error carries the end of its output.
func goBench(ctx context.Context, limit time.Duration, args ...string) ([]microResult, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", append([]string{"test", "-run", "^$"}, args...)...).CombinedOutput()
	var res []microResult
	for _, line := range strings.Split(string(out), "\n") {
		if r, ok := parseBenchLine(line); ok {
			res = append(res, r)
		}
	}
	if err != nil {
		tail := string(out)
		if len(tail) > 800 {
			tail = tail[len(tail)-800:]
		}
		return res, fmt.Errorf("%v: %s", err, tail)
	}
	return res, nil
}

func (r *report) microNamed(name string) *microResult {
	for i := range r.micro {
		if r.micro[i].Name == name {
			return &r.micro[i]
		}
	}
	return nil
}

// microRange is the least and the greatest of the metric unit that the
// benchmarks named with prefix reported.
func (r *report) microRange(prefix, unit string) (lo, hi float64, ok bool) {
	for _, m := range r.micro {
		if !strings.HasPrefix(m.Name, prefix) {
			continue
		}
		for _, x := range m.Extra {
			if x.Unit != unit {
				continue
			}
			if !ok || x.V < lo {
				lo = x.V
			}
			if !ok || x.V > hi {
				hi = x.V
			}
			ok = true
		}
	}
	return lo, hi, ok
}

// bpsResult is the engine's memory per tracked source, measured from
// outside verdict/ through its public API: the heap an engine takes at
// start for max_sources = 1,000,000 minus that for 1,000, per extra slot,
// and what filling the table with a million knocking sources adds.
type bpsResult struct {
	PerSlot   float64
	FillExtra float64
	Err       error
}

func bytesPerSource() *bpsResult {
	pol := func(n int) verdict.Policy {
		return verdict.Policy{
			Unprotected: verdict.Accept, MaxSources: n, MaxGrants: 1000, MaxReplay: 1000,
			Doors: []verdict.Door{{
				Name:            "ssh",
				Sequence:        []verdict.Port{{Proto: verdict.TCP, Num: 7000}, {Proto: verdict.TCP, Num: 8000}, {Proto: verdict.TCP, Num: 9000}},
				SequenceTimeout: time.Minute,
				Open:            []verdict.Port{{Proto: verdict.TCP, Num: 22}},
				OpenFor:         time.Minute,
			}},
		}
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	t0 := time.Unix(1_700_000_000, 0)
	h0 := heap()
	small, err := verdict.NewEngine(pol(1000), t0)
	if err != nil {
		return &bpsResult{Err: err}
	}
	h1 := heap()
	big, err := verdict.NewEngine(pol(1_000_000), t0)
	if err != nil {
		return &bpsResult{Err: err}
	}
	h2 := heap()
	for i := 0; i < 1_000_000; i++ {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		big.Decide(verdict.Packet{Src: src, Proto: verdict.TCP, DstPort: 7000, SrcPort: 1, TCPFlags: verdict.FlagSYN}, t0)
	}
	h3 := heap()
	runtime.KeepAlive(small)
	runtime.KeepAlive(big)
	perSmall := float64(h1 - h0)
	return &bpsResult{
		PerSlot:   (float64(h2-h1) - perSmall) / 999_000,
		FillExtra: (float64(h3) - float64(h2)) / 1_000_000,
	}
}

// Formatting.

func kpps(v float64) string { return fmt.Sprintf("%.1fk", v/1000) }
func pctS(v float64) string { return fmt.Sprintf("%.2f %%", 100*v) }
func us(v float64) string   { return fmt.Sprintf("%.0f µs", v) }
func ratio(a, b float64) string {
	if b == 0 || a == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

type target struct {
	What, Measured string
	Pass           string // pass, MISS, n/a
}

func passIf(ok bool) string {
	if ok {
		return "pass"
	}
	return "MISS"
}

// added is a consumer's median latency figure minus the no-queue one.
func (r *report) added(name string, f func(trial) float64) (float64, bool) {
	base, c := named(r.latency, "no queue"), named(r.latency, name)
	if base == nil || c == nil || len(base.ok()) == 0 || len(c.ok()) == 0 {
		return 0, false
	}
	return c.med(f) - base.med(f), true
}

func (r *report) targets() []target {
	var ts []target
	kg := medianOf(r.tput, "knockgate", rateOf)
	thr := func(what, ref string, want float64) {
		rr := medianOf(r.tput, ref, rateOf)
		if kg == 0 || rr == 0 {
			ts = append(ts, target{what, "not measured", "n/a"})
			return
		}
		m := fmt.Sprintf("%s (%s vs %s verdicts/s; CPU per packet %.2f vs %.2f µs)", ratio(kg, rr), kpps(kg), kpps(rr),
			medianOf(r.tput, "knockgate", cpuOf), medianOf(r.tput, ref, cpuOf))
		if !named(r.tput, "knockgate").mostlySaturated() {
			m += "; knockgate was mostly not saturated (generator-bound), so its rate is a lower bound"
		}
		ts = append(ts, target{what, m, passIf(kg/rr >= want)})
	}
	thr("throughput ≥ 0.9 × refgo (go-nfqueue)", "refgo", 0.9)
	thr("throughput ≥ 0.8 × refc (libnetfilter_queue, issue 7)", "refc", 0.8)
	if kc := medianOf(r.tput, kg1c.String(), rateOf); kc > 0 && kg > 0 {
		ts = append(ts, target{fmt.Sprintf("throughput with the cluster on ≥ 0.95 × off, while %d grants/s replicate (issue 13)", peerRate),
			fmt.Sprintf("%s (%s vs %s verdicts/s; CPU per packet %.2f vs %.2f µs)", ratio(kc, kg), kpps(kc), kpps(kg),
				medianOf(r.tput, kg1c.String(), cpuOf), medianOf(r.tput, "knockgate", cpuOf)), passIf(kc/kg >= 0.95)})
	} else if named(r.tput, kg1c.String()) != nil {
		ts = append(ts, target{"throughput with the cluster on ≥ 0.95 × off (issue 13)", "not measured", "n/a"})
	}
	lat := func(what, ref string) {
		a, ok1 := r.added("knockgate", p99Of)
		b, ok2 := r.added(ref, p99Of)
		if !ok1 || !ok2 || b <= 0 {
			ts = append(ts, target{what, "not measured", "n/a"})
			return
		}
		ts = append(ts, target{what, fmt.Sprintf("%s (%s vs %s added p99)", ratio(a, b), us(a), us(b)), passIf(a/b <= 1.2)})
	}
	lat("added latency p99 ≤ 1.2 × refgo's", "refgo")
	lat("added latency p99 ≤ 1.2 × refc's (issue 7)", "refc")
	p, d := r.microNamed("BenchmarkParse/ipv4-tcp-syn"), r.microNamed("BenchmarkDecide/doors=10000/sources=1000000")
	if p != nil && d != nil && p.Mem && d.Mem {
		ns := p.NsOp + d.NsOp
		ts = append(ts, target{"parse + decide < 200 ns, 0 allocs (10,000 doors, 1,000,000 sources)",
			fmt.Sprintf("%.0f ns (parse %.1f + decide %.1f), %.0f allocs", ns, p.NsOp, d.NsOp, p.Allocs+d.Allocs),
			passIf(ns < 200 && p.Allocs+d.Allocs == 0)})
	} else {
		ts = append(ts, target{"parse + decide < 200 ns, 0 allocs", "not measured", "n/a"})
	}
	if b := r.bytesPerSource; b != nil && b.Err == nil {
		m := fmt.Sprintf("%.0f bytes per slot at start (+%.1f when filled), from the heap of verdict.NewEngine", b.PerSlot, b.FillExtra)
		if lo, hi, ok := r.microRange("BenchmarkStatePerSource/", "B/source"); ok {
			m += fmt.Sprintf("; BenchmarkStatePerSource: %.0f-%.0f B/source", lo, hi)
		}
		ts = append(ts, target{"state per tracked source < 256 bytes", m, passIf(b.PerSlot+max(0, b.FillExtra) < 256)})
	}
	one, two := r.drainRate("knockgate", 1), r.drainRate("knockgate", 2)
	var live string
	if l1, l2 := r.scalingRate("knockgate"), r.scalingRate("knockgate (2 queues)"); l1 > 0 && l2 > 0 {
		live = fmt.Sprintf("; with a live generator %s (%s vs %s, generator-bound: context only)", ratio(l2, l1), kpps(l2), kpps(l1))
	}
	const what2q = "2 queues on 2 cores ≥ 1.6 × one queue (knockgate, drain mode)"
	switch {
	case r.kgQueuesUnsupported != "":
		ts = append(ts, target{what2q, "not supported by this build (gate { queues } refused by knockgate validate)", "n/a"})
	case one > 0 && two > 0:
		ts = append(ts, target{what2q, fmt.Sprintf("%s (%s vs %s verdicts/s; refgo %s, refc %s)%s", ratio(two, one), kpps(two), kpps(one),
			ratio(r.drainRate("refgo", 2), r.drainRate("refgo", 1)), ratio(r.drainRate("refc", 2), r.drainRate("refc", 1)), live), passIf(two/one >= 1.6)})
	default:
		ts = append(ts, target{what2q, "not measured" + live, "n/a"})
	}
	ts = append(ts, r.clusterTargets()...)
	ko := "see section 4"
	if r.knockopenErr != nil {
		ko = "section 4 failed"
	}
	if r.opts.skipped("knockopen") {
		ko = "skipped"
	}
	ts = append(ts, target{"knock-to-open ≥ 100 × faster than knockd", ko, "see §4"})
	const whatRSS = "RSS after 50 reloads ≤ 1.5 × RSS after start (issue 12)"
	switch m := r.reloadMem; {
	case r.opts.skipped("reloadmem"):
		ts = append(ts, target{whatRSS, "skipped", "n/a"})
	case r.reloadMemErr != nil || m == nil:
		ts = append(ts, target{whatRSS, "not measured: " + oneLine(r.reloadMemErr), "n/a"})
	default:
		ts = append(ts, target{whatRSS, fmt.Sprintf("%s (%.1f MiB after %d reloads vs %.1f MiB after start)", ratio(float64(m.afterKiB), float64(m.startKiB)),
			float64(m.afterKiB)/1024, m.reloads, float64(m.startKiB)/1024), passIf(m.ratio() <= 1.5)})
	}
	return ts
}

// drainRate is the median drain-mode rate of kind on n queues.
func (r *report) drainRate(kind string, n int) float64 {
	return medianOf(r.drain, consumer{Kind: kind, Queues: n}.String(), drainOf)
}

func (r *report) scalingRate(name string) float64 { return medianOf(r.scaling, name, rateOf) }

// drainSection writes section 5's drain-mode table.
func (r *report) drainSection(sb *strings.Builder) {
	o := r.opts
	fmt.Fprintf(sb, "\n### 1 vs 2 queues, drain mode (consumer capacity with both cores free)\n\n"+
		"Each trial: start the consumer unpinned, bound to its queue(s) (`--queue-num 0`, or `--queue-balance 0:1`), SIGSTOP it; "+
		"bench/loadgen (CPU %s) queues %d SYNs per queue from %s (131,072 sources, so the address hash splits them evenly) and exits; "+
		"then SIGCONT, and a poller thread (pinned to CPU %d) reads the gateway's /proc/net/netfilter/nfnetlink_queue with pread on one open fd "+
		"every %v, every %v once the queues look less than %v from empty, until queue_total is 0 on every queue. "+
		"Drained/s = packets queued at SIGCONT / (first all-empty poll − SIGCONT), an upper bound on the time by at most the last interval. "+
		"Every drained packet is checked against the gateway's filter INPUT counter of accepted SYNs and the consumer's own count; "+
		"fill drops (queue full, receive buffer full, lost before the queue) are not counted as drained. "+
		"The consumers alternate, 1 and 2 queues swap order every round; medians over %d rounds.\n\n",
		o.genCPU, o.drainFill, spoofWide4, o.drainPollCPU, o.drainPoll, pollFine, fineAhead, o.rounds)
	sb.WriteString("| consumer | drained/s (median) | per round | 2 q / 1 q | queued at SIGCONT (per queue, last round) | fill drops q/u/lost | accepted / counted = drained | first verdict | queues empty at (median) | consumer CPU | CPU per packet | machine busy / idle (Σ rounds) | poller |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.drain {
		ok := x.ok()
		if len(ok) == 0 {
			fmt.Fprintf(sb, "| %s | failed: %s | | | | | | | | | | | |\n", x.Name, oneLine(x.firstErr()))
			continue
		}
		var per []string
		var qd, ud, lost uint64
		checked := 0
		var wall, busy, idle, polls, pollCPU, lastGap float64
		var qEnd [][]float64
		for _, t := range ok {
			d := t.D
			per = append(per, kpps(d.Rate))
			qd, ud, lost = qd+d.QDropped, ud+d.UDropped, lost+d.Lost
			if d.Accepted == d.filled() && (!d.CountedOK || d.Counted == d.filled()) {
				checked++
			}
			wall += d.Seconds
			busy += d.MachineBusy
			idle += d.MachineIdle
			polls += float64(d.Polls)
			pollCPU += d.PollCPU * float64(d.Polls)
			lastGap = max(lastGap, d.PollLastGap)
			for q, v := range d.PerQueue {
				if q >= len(qEnd) {
					qEnd = append(qEnd, nil)
				}
				qEnd[q] = append(qEnd[q], v*1e3)
			}
		}
		last := ok[len(ok)-1].D
		var split []string
		for _, v := range last.Filled {
			split = append(split, fmt.Sprint(v))
		}
		var ends []string
		for _, v := range qEnd {
			ends = append(ends, fmt.Sprintf("%.1f", median(v)))
		}
		vs := ""
		if n := strings.TrimSuffix(x.Name, " (2 queues)"); n != x.Name {
			vs = "**" + ratio(x.med(drainOf), r.drainRate(n, 1)) + "**"
		}
		fmt.Fprintf(sb, "| %s | **%s** | %s | %s | %s | %d/%d/%d | %d of %d rounds | %.1f ms | %s ms | %.2f cores | %.2f µs | %.2f / %.2f cores | %.0f polls, %.0f µs CPU each, %.3f cores; last gap ≤ %.0f µs |\n",
			x.Name, kpps(x.med(drainOf)), strings.Join(per, ", "), vs, strings.Join(split, " + "), qd, ud, lost, checked, len(ok),
			x.med(func(t trial) float64 { return t.D.FirstVerdict * 1e3 }), strings.Join(ends, " / "),
			x.med(func(t trial) float64 { return t.D.CPUCores }), x.med(func(t trial) float64 { return t.D.CPUPerPacket }),
			busy/wall, idle/wall, polls/float64(len(ok)), pollCPU/polls, pollCPU/1e6/wall, lastGap)
	}
	sb.WriteString("\n\"consumer CPU\" is the consumer's CPU time (every thread, schedstat) over the drain time, including the kernel work done in its system calls and the softirqs run on its time; " +
		"\"machine busy / idle\" is the whole machine's from /proc/stat (10 ms steps, so summed over the rounds): busy includes the consumer, the poller, " +
		"ksoftirqd, and whatever else runs on this shared machine. A poll costs the poller CPU chiefly in its wake-up (a pread of the table is under 1 µs); its column says what all polls cost together.\n")
	fmt.Fprintf(sb, "\n2 queues / 1 queue, drain mode: knockgate %s, refgo %s, refc %s.\n",
		ratio(r.drainRate("knockgate", 2), r.drainRate("knockgate", 1)), ratio(r.drainRate("refgo", 2), r.drainRate("refgo", 1)), ratio(r.drainRate("refc", 2), r.drainRate("refc", 1)))
}

func (r *report) targetTable(sb *strings.Builder) {
	sb.WriteString("| target | measured | |\n|---|---|---|\n")
	for _, t := range r.targets() {
		fmt.Fprintf(sb, "| %s | %s | %s |\n", t.What, t.Measured, t.Pass)
	}
}

func tputTable(sb *strings.Builder, rows []*row, ref string) {
	refRate := medianOf(rows, ref, rateOf)
	fmt.Fprintf(sb, "| consumer | verdicts/s (median) | per round | vs %s | offered (loadgen) | saturated | queue_dropped | loss | consumer CPU per packet |\n|---|---|---|---|---|---|---|---|---|\n", ref)
	var bound []string
	for _, x := range rows {
		ok := x.ok()
		if len(ok) == 0 {
			fmt.Fprintf(sb, "| %s | failed: %s | | | | | | | |\n", x.Name, oneLine(x.firstErr()))
			continue
		}
		var per []string
		var qd, ud uint64
		sat := 0
		for _, t := range ok {
			per = append(per, kpps(t.T.Rate))
			qd += t.T.QDropped
			ud += t.T.UDropped
			if t.T.Saturated {
				sat++
			}
		}
		name := x.Name
		if x.Note != "" {
			name += " — " + x.Note
		}
		drops := fmt.Sprint(qd / uint64(len(ok)))
		if ud > 0 {
			drops += fmt.Sprintf(" (+%d user_dropped)", ud/uint64(len(ok)))
		}
		fmt.Fprintf(sb, "| %s | **%s** | %s | %s | %s/s | %d of %d | %s | %s | %.2f µs |\n", name, kpps(x.med(rateOf)), strings.Join(per, ", "),
			ratio(x.med(rateOf), refRate), kpps(x.med(genOf)), sat, len(ok), drops, pctS(x.med(lossOf)), x.med(cpuOf))
		if !x.mostlySaturated() {
			bound = append(bound, x.Name)
		}
	}
	sb.WriteString("\n\"saturated\": rounds in which the kernel dropped packets at the queue, i.e. the consumer, not the generator, set the rate. ")
	if len(bound) > 0 {
		fmt.Fprintf(sb, "**%s**: mostly not saturated, so the generator was the limit and the rate is a lower bound; compare CPU per packet instead.", strings.Join(bound, ", "))
	}
	sb.WriteString("\n")
}

func (r *report) markdown() string {
	var sb strings.Builder
	o := r.opts
	fmt.Fprintf(&sb, "# `make bench`, %s\n\n", r.date)
	for _, m := range r.machine {
		fmt.Fprintf(&sb, "- %s\n", m)
	}
	fmt.Fprintf(&sb, "- knockgate: %s\n", r.kgVersion)
	fmt.Fprintf(&sb, "- load average (1, 5, 15 min) at the start: %s; at the end: %s\n", r.loadStart, r.loadEnd)
	fmt.Fprintf(&sb, "- run: %d rounds, %v flat-out windows, %d connects per latency trial, generator on CPU %s, consumer on CPU %s; took %.0f s\n\n",
		o.rounds, o.window, o.latencyN, o.genCPU, o.consCPU, r.took.Seconds())
	sb.WriteString("Every ratio compares medians over the rounds of one run, the consumers alternating (refgo, knockgate, refc, refgo, ...). " +
		"refgo is a minimal accept-all consumer on go-nfqueue v2.1.0, refc the classic libnetfilter_queue loop (one recv and one verdict per packet); " +
		"both bind the queue as knockgate does (copy range 256, queue length 16384, receive buffer forced to 16384 × (256 + 512) bytes, as gate's readBufferFor). See BENCHMARKS.md for the method.\n\n")

	sb.WriteString("## Targets\n\n")
	r.targetTable(&sb)
	for _, n := range r.notes {
		fmt.Fprintf(&sb, "\n> %s\n", n)
	}

	sb.WriteString("\n## 1. Engine microbenchmarks\n\n`go test -run '^$' -bench . -benchmem ./verdict/ ./gate/`\n\n")
	if len(r.micro) > 0 {
		sb.WriteString("| benchmark | ns/op | B/op | allocs/op | its own metrics |\n|---|---|---|---|---|\n")
		for _, m := range r.micro {
			bop, allocs := "?", "?"
			if m.Mem {
				bop, allocs = fmt.Sprintf("%.0f", m.BOp), fmt.Sprintf("%.0f", m.Allocs)
			}
			var extra []string
			for _, x := range m.Extra {
				extra = append(extra, fmt.Sprintf("%g %s", x.V, x.Unit))
			}
			fmt.Fprintf(&sb, "| %s | %.1f | %s | %s | %s |\n", m.Name, m.NsOp, bop, allocs, strings.Join(extra, ", "))
		}
	}
	if r.microErr != nil {
		fmt.Fprintf(&sb, "\ngo test failed: `%v`\n", r.microErr)
	}
	if b := r.bytesPerSource; b != nil {
		if b.Err != nil {
			fmt.Fprintf(&sb, "\nBytes per tracked source: not measured (%v).\n", b.Err)
		} else {
			fmt.Fprintf(&sb, "\nBytes per tracked source (bench/run, through verdict.NewEngine: heap of max_sources = 1,000,000 minus 1,000, per slot): "+
				"**%.0f bytes** allocated at start; filling all 1,000,000 slots with first knocks adds %.1f bytes per source.\n", b.PerSlot, b.FillExtra)
		}
	}

	sb.WriteString("\n## 2. End-to-end throughput (IPv4 SYNs, one queue)\n\n")
	if len(r.tput) > 0 {
		fmt.Fprintf(&sb, "bench/loadgen sends spoofed SYNs (198.51.100.0/24, every packet a new conntrack entry) flat out for %v on CPU %s; the consumer runs on CPU %s. "+
			"Verdicts/s = packets the kernel queued to the consumer (`id_sequence` − `user_dropped` in /proc/net/netfilter/nfnetlink_queue) over the time they kept coming; "+
			"loss = 1 − that / sent. A consumer that falls behind shows queue_dropped (mean per trial).\n\n", o.window, o.genCPU, o.consCPU)
		tputTable(&sb, r.tput, "refgo")
		kg, rg, rc := named(r.tput, "knockgate"), named(r.tput, "refgo"), named(r.tput, "refc")
		if kg != nil && rg != nil && rc != nil {
			fmt.Fprintf(&sb, "\nknockgate / refgo = %s, knockgate / refc = %s, refgo / refc = %s.\n",
				ratio(kg.med(rateOf), rg.med(rateOf)), ratio(kg.med(rateOf), rc.med(rateOf)), ratio(rg.med(rateOf), rc.med(rateOf)))
		}
	}
	if len(r.sustain) > 0 {
		sb.WriteString("\n### Sustainable rate (loss < 0.5 %)\n\nPaced load, 1.5 s per step, bisection from 0.85 × the flat-out rate; the consumers alternate step by step.\n\n")
		sb.WriteString("| consumer | sustainable | steps: offered → loss |\n|---|---|---|\n")
		var best = map[string]float64{}
		for _, s := range r.sustain {
			var st []string
			for _, x := range s.Steps {
				if x.Err != nil {
					st = append(st, fmt.Sprintf("%s: %s", kpps(float64(x.Target)), oneLine(x.Err)))
					continue
				}
				st = append(st, fmt.Sprintf("%s (%s sent) → %s (q %d, u %d)", kpps(float64(x.Target)), kpps(x.Achieved), pctS(x.Loss), x.QDropped, x.UDropped))
			}
			best[s.Name] = s.Best
			fmt.Fprintf(&sb, "| %s | **%s/s** | %s |\n", s.Name, kpps(s.Best), strings.Join(st, "; "))
		}
		fmt.Fprintf(&sb, "\nknockgate / refgo = %s, knockgate / refc = %s.\n", ratio(best["knockgate"], best["refgo"]), ratio(best["knockgate"], best["refc"]))
	}

	if len(r.latency) > 0 {
		fmt.Fprintf(&sb, "\n## 3. Latency: SYN → SYN-ACK through the gateway\n\nSequential blocking connects from the client namespace (CPU %s) to a listener in the gateway, each from a new port (a new flow), closed with a RST; %d per trial. Added = consumer − no queue (medians over rounds).\n\n", o.genCPU, o.latencyN)
		sb.WriteString("| path | p50 | p99 | added p50 | added p99 | failed | p99 per round |\n|---|---|---|---|---|---|---|\n")
		for _, x := range r.latency {
			ok := x.ok()
			if len(ok) == 0 {
				fmt.Fprintf(&sb, "| %s | failed: %s | | | | | |\n", x.Name, oneLine(x.firstErr()))
				continue
			}
			var per []string
			failed := 0
			for _, t := range ok {
				per = append(per, us(t.L.P99))
				failed += t.L.Failed
			}
			a50, _ := r.added(x.Name, p50Of)
			a99, _ := r.added(x.Name, p99Of)
			fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %d | %s |\n", x.Name, us(x.med(p50Of)), us(x.med(p99Of)), us(a50), us(a99), failed, strings.Join(per, ", "))
		}
		k99, _ := r.added("knockgate", p99Of)
		g99, _ := r.added("refgo", p99Of)
		c99, _ := r.added("refc", p99Of)
		fmt.Fprintf(&sb, "\nAdded p99: knockgate / refgo = %s, knockgate / refc = %s, refgo / refc = %s.\n", ratio(k99, g99), ratio(k99, c99), ratio(g99, c99))
	}

	ko := strings.TrimSpace(r.knockopen)
	if !(strings.HasPrefix(ko, "## ") && r.knockopenErr == nil) {
		sb.WriteString("\n## 4. Knock-to-open: knockgate vs knockd\n\n")
	} else {
		sb.WriteString("\n")
	}
	switch {
	case o.skipped("knockopen"):
		sb.WriteString("Skipped (-skip knockopen).\n")
	case r.knockopenErr != nil:
		fmt.Fprintf(&sb, "`go run ./bench/knockopen` failed, so this section has no figures: `%v`\n", r.knockopenErr)
		if strings.TrimSpace(r.knockopen) != "" {
			sb.WriteString("\nWhat it printed before failing:\n\n" + r.knockopen + "\n")
		}
	default:
		sb.WriteString(ko + "\n\n(From `go run ./bench/knockopen`, run by bench/run after the lab above was torn down.)\n")
	}

	if len(r.drain) > 0 || len(r.scaling) > 0 || r.kgQueuesUnsupported != "" {
		sb.WriteString("\n## 5. Scaling\n")
		if r.kgQueuesUnsupported != "" {
			fmt.Fprintf(&sb, "\nknockgate on 2 queues: not supported by this build (`knockgate validate` on `gate { queues = 2 }`: %s).\n", r.kgQueuesUnsupported)
		}
		if len(r.drain) > 0 {
			r.drainSection(&sb)
		}
	}
	if len(r.scaling) > 0 {
		fmt.Fprintf(&sb, "\n### 1 vs 2 queues with a live generator (generator-bound context)\n\n"+
			"Generator and consumer unpinned, %v flat out from %s; refgo serves N queues with one socket and one goroutine each, refc with one thread each. "+
			"On two cores the generator and the softirq work of receiving its SYNs take about one core, so two readers share the other: "+
			"these rows say what this box does under a live flood, not what the consumers can do (drain mode above).\n\n", o.window, spoofWide4)
		tputTable(&sb, r.scaling, "refgo")
		fmt.Fprintf(&sb, "\n2 queues / 1 queue, live: knockgate %s, refgo %s, refc %s.\n",
			ratio(r.scalingRate("knockgate (2 queues)"), r.scalingRate("knockgate")), ratio(r.scalingRate("refgo (2 queues)"), r.scalingRate("refgo")),
			ratio(r.scalingRate("refc (2 queues)"), r.scalingRate("refc")))
	}
	if m := r.reloadMem; m != nil || r.reloadMemErr != nil {
		sb.WriteString("\n## 6. Memory across reloads\n\n")
		if r.reloadMemErr != nil {
			fmt.Fprintf(&sb, "Failed, so this section has no figures: `%v`\n", r.reloadMemErr)
		} else {
			fmt.Fprintf(&sb, "The real binary with the default caps (max_sources %d, max_grants %d, max_replay %d), a knock door and an SPA door, "+
				"bound to a queue nothing is steered to, sent %d SIGHUPs one after the other (each waits for its \"policy reloaded\" line). "+
				"VmRSS 2.5 s after start (past two sweeps, which make every table resident): %.1f MiB; 2.5 s after the last reload: %.1f MiB (%s).\n",
				verdict.DefaultMaxSources, verdict.DefaultMaxGrants, verdict.DefaultMaxReplay, m.reloads,
				float64(m.startKiB)/1024, float64(m.afterKiB)/1024, ratio(float64(m.afterKiB), float64(m.startKiB)))
		}
	}
	if len(r.flood) > 0 {
		fmt.Fprintf(&sb, "\n### A flood of first knocks from 100,000 spoofed sources\n\nIPv6 SYNs to tcp/%d (the first knock of door ssh) from 100,000 distinct addresses of %s, cycled, flat out for %v, pinned as in section 2. knockgate runs with max_sources = 10000, so the table fills and evicts; refgo accepts the same packets.\n\n", knockPort, spoof6, o.window)
		tputTable(&sb, r.flood, "refgo")
		for _, x := range r.flood {
			if len(x.Extra) > 0 {
				fmt.Fprintf(&sb, "\nknockgate's metrics at the end of a trial (largest over rounds): tracked sources %.0f, evictions %.0f.\n",
					x.Extra["knockgate_tracked_sources"], x.Extra["knockgate_evictions_total"])
			}
		}
	}
	r.clusterSection(&sb)
	return sb.String()
}

func (r *report) write(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(dir, r.date+".md")
	return p, os.WriteFile(p, []byte(r.markdown()), 0o644)
}

func (r *report) summary() string {
	var sb strings.Builder
	sb.WriteString("knockgate bench summary\n\n")
	var rows [][2]string
	for _, x := range r.tput {
		rows = append(rows, [2]string{"throughput " + x.Name, kpps(x.med(rateOf)) + " verdicts/s"})
	}
	for _, s := range r.sustain {
		rows = append(rows, [2]string{"sustainable " + s.Name, kpps(s.Best) + "/s"})
	}
	for _, x := range r.latency {
		rows = append(rows, [2]string{"latency " + x.Name, fmt.Sprintf("p50 %s, p99 %s", us(x.med(p50Of)), us(x.med(p99Of)))})
	}
	for _, x := range r.drain {
		rows = append(rows, [2]string{"drain " + x.Name, kpps(x.med(drainOf)) + " verdicts/s"})
	}
	for _, x := range r.scaling {
		rows = append(rows, [2]string{"live scaling " + x.Name, kpps(x.med(rateOf)) + " verdicts/s (generator-bound)"})
	}
	for _, x := range r.flood {
		rows = append(rows, [2]string{"knock flood " + x.Name, kpps(x.med(rateOf)) + " verdicts/s"})
	}
	if m := r.reloadMem; m != nil {
		rows = append(rows, [2]string{"RSS start / after reloads", fmt.Sprintf("%.1f / %.1f MiB", float64(m.startKiB)/1024, float64(m.afterKiB)/1024)})
	}
	for _, kv := range rows {
		fmt.Fprintf(&sb, "  %-36s %s\n", kv[0], kv[1])
	}
	sb.WriteString("\ntargets:\n")
	for _, t := range r.targets() {
		fmt.Fprintf(&sb, "  [%-6s] %s: %s\n", t.Pass, t.What, t.Measured)
	}
	return sb.String()
}

// oneLine fits an error in a table cell.
func oneLine(err error) string {
	if err == nil {
		return ""
	}
	s := strings.Join(strings.Fields(err.Error()), " ")
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
