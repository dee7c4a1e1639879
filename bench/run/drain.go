package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knockgate/knockgate/internal/nfqstat"
)

// Drain mode (section 5): the consumers' capacity on 1 and 2 queues with
// both cores free for them. On this 2-core machine a live generator and
// the softirq work of receiving its SYNs take one core, so a live 2-queue
// run measures the box, not the consumer. Here the generator runs first,
// against a stopped consumer:
//
//  1. start the consumer unpinned, bound to its queue(s), and SIGSTOP it;
//  2. bench/loadgen fills the kernel queue(s) (fill per queue, below the
//     queue length 16384) and exits;
//  3. SIGCONT the consumer and poll /proc/net/netfilter/nfnetlink_queue
//     in the gateway (pread on one open fd, every pollEvery) until
//     queue_total is 0 on every queue.
//
// drained packets / (first all-empty poll − SIGCONT) = verdicts/s. The
// drained packets are checked against the filter INPUT counter of
// accepted SYNs and the consumer's own count; drops during the fill
// (queue full, receive buffer full, lost before the queue) are reported
// apart and are not counted as drained.

// drainResult is one drain trial.
type drainResult struct {
	Sent               int
	Filled             []uint64  // queue_total per queue at SIGCONT
	QDropped, UDropped uint64    // during the fill: queue full; receive buffer full
	Lost               uint64    // sent, but never reached the queue (neither queued nor queue_dropped)
	Seconds            float64   // SIGCONT to the first poll that saw every queue empty
	PerQueue           []float64 // SIGCONT to the first poll that saw each queue empty
	FirstVerdict       float64   // SIGCONT to the first poll that saw a queue shrink
	Rate               float64   // sum(Filled) / Seconds
	Accepted           uint64    // filter INPUT counter of accepted SYNs, over the trial
	Counted            uint64    // the consumer's own packet count
	CountedOK          bool
	CPUCores           float64 // consumer CPU time (all threads) / Seconds
	CPUPerPacket       float64 // µs
	Polls              int
	PollEvery          float64 // µs, mean interval between polls
	PollCPU            float64 // µs of the poller thread's CPU per poll
	PollLastGap        float64 // µs between the last two polls: the bound on the end's error
	// The whole machine over the drain, in seconds of CPU time (10 ms
	// steps): busy (everything, the consumer included) and idle.
	MachineBusy, MachineIdle float64
}

func (d drainResult) filled() uint64 {
	var s uint64
	for _, v := range d.Filled {
		s += v
	}
	return s
}

// drain runs one drain-mode trial of consumer c.
func (b *bench) drain(ctx context.Context, c consumer, fillPerQueue int, pollEvery time.Duration, pollCPU int) (drainResult, error) {
	mode := steerQueue0
	if c.Queues == 2 {
		mode = steerBalance2
	}
	if err := b.setSteering(mode); err != nil {
		return drainResult{}, err
	}
	r, err := b.start(ctx, c, "")
	if err != nil {
		return drainResult{}, err
	}
	stopped := false
	defer func() {
		if !stopped {
			b.stop(r)
		}
	}()
	pid := r.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return drainResult{}, fmt.Errorf("SIGSTOP %s: %w", c, err)
	}
	if err := waitStopped(pid, time.Second); err != nil {
		return drainResult{}, err
	}
	gw := b.lab.gwPID()
	m0, err := readQueues(gw)
	if err != nil {
		return drainResult{}, err
	}
	acc0, err := acceptedSYNs()
	if err != nil {
		return drainResult{}, err
	}

	// Fill.
	gen, err := b.loadgenRun(ctx, genSpec{Dst: gwAddr4, Port: openPort, Count: fillPerQueue * c.Queues,
		Max: 5 * time.Second, Src: spoofWide4, CPUs: b.genCPU})
	if err != nil {
		return drainResult{}, err
	}
	// The sender's softirq queues each packet before its sendmmsg
	// returns; wait for the counts to hold still all the same.
	var m1 map[uint16]nfqstat.Queue
	var last uint64
	for i, stable := 0, 0; i < 200 && stable < 4; i++ {
		time.Sleep(5 * time.Millisecond)
		if m1, err = readQueues(gw); err != nil {
			return drainResult{}, err
		}
		_, _, _, total := delivered(m1, c.Queues)
		if total == last {
			stable++
		} else {
			stable = 0
		}
		last = total
	}
	res := drainResult{Sent: gen.Sent, Filled: make([]uint64, c.Queues)}
	var ids uint64
	for q := 0; q < c.Queues; q++ {
		a, z := m0[uint16(q)], m1[uint16(q)]
		res.Filled[q] = z.Total
		res.QDropped += z.Dropped - a.Dropped
		res.UDropped += z.UserDropped - a.UserDropped
		ids += z.IDSequence - a.IDSequence
		if z.Total == 0 {
			return res, fmt.Errorf("queue %d is empty after the fill (%d sent)", q, gen.Sent)
		}
	}
	if reached := ids + res.QDropped; uint64(gen.Sent) > reached {
		res.Lost = uint64(gen.Sent) - reached
	}

	// Drain.
	stopPerf := b.startPerf(c)
	busy0, idle0 := machineTicks()
	cpu0 := cpuNs(pid)
	p, err := pollDrain(gw, c.Queues, pid, pollEvery, pollCPU, 10*time.Second)
	cpu1 := cpuNs(pid)
	busy1, idle1 := machineTicks()
	stopPerf()
	if err != nil {
		return res, err
	}
	res.Seconds, res.PerQueue, res.FirstVerdict = p.seconds, p.perQueue, p.first
	res.Polls, res.PollEvery, res.PollCPU, res.PollLastGap = p.polls, p.every, p.cpu, p.lastGap
	res.MachineBusy = float64(busy1-busy0) / userHZ
	res.MachineIdle = float64(idle1-idle0) / userHZ
	res.Rate = float64(res.filled()) / res.Seconds
	res.CPUCores = float64(cpu1-cpu0) / 1e9 / res.Seconds
	res.CPUPerPacket = float64(cpu1-cpu0) / 1e3 / float64(res.filled())

	// Check: every drained packet accepted, by the counter after the
	// queue and by the consumer. The last verdict's reinjection may
	// still be on its way through INPUT when its queue reads empty.
	time.Sleep(50 * time.Millisecond)
	acc1, err := acceptedSYNs()
	if err != nil {
		return res, err
	}
	res.Accepted = acc1 - acc0
	if c.Kind == "knockgate" {
		if v, err := metricValue("knockgate_queue_packets_total"); err == nil {
			res.Counted, res.CountedOK = uint64(v), true
		}
	}
	select {
	case <-r.done:
		out, _ := os.ReadFile(r.log)
		return res, fmt.Errorf("%s exited during the drain: %s", c, strings.TrimSpace(string(out)))
	default:
	}
	b.stop(r)
	stopped = true
	if c.Kind != "knockgate" {
		if n, ok := loggedPackets(r.log); ok {
			res.Counted, res.CountedOK = n, true
		}
	}
	return res, nil
}

var packetsLine = regexp.MustCompile(`packets=(\d+)`)

// loggedPackets is the packets=N that refgo and refc print when they stop.
func loggedPackets(path string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	m := packetsLine.FindSubmatch(b)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseUint(string(m[1]), 10, 64)
	return n, err == nil
}

// waitStopped waits until every thread of pid is stopped (state T).
func waitStopped(pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		all := len(stats) > 0
		for _, s := range stats {
			b, err := os.ReadFile(s)
			if err != nil {
				continue
			}
			i := strings.LastIndexByte(string(b), ')')
			if i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
				all = false
				break
			}
		}
		if all {
			return nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("pid %d did not stop within %v", pid, limit)
}

type pollResult struct {
	seconds  float64
	perQueue []float64
	first    float64
	polls    int
	every    float64 // µs
	cpu      float64 // µs per poll
	lastGap  float64 // µs between the last two polls
}

// pollDrain resumes pid and times until queue_total is 0 on queues
// 0..queues-1. It runs on one OS thread pinned to cpu (-1: not pinned)
// that sends the SIGCONT itself, reads the gateway's nfnetlink_queue
// table with pread at offset 0 on a file opened once (seq_file re-reads
// from the start), parses it without allocating, and sleeps with
// nanosleep between reads (pollLoop). The time is an upper bound: the
// queues emptied at most one interval (plus one read) before the poll
// that saw it. The thread's own CPU time (RUSAGE_THREAD) is reported per
// poll.
func pollDrain(gwPID, queues, pid int, pollEvery time.Duration, cpu int, limit time.Duration) (pollResult, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/netfilter/nfnetlink_queue", gwPID))
	if err != nil {
		return pollResult{}, err
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return pollResult{}, err
	}
	type out struct {
		r   pollResult
		err error
	}
	ch := make(chan out, 1)
	go func() {
		// The thread's affinity is put back and the thread unlocked
		// before the goroutine ends. A goroutine that ends locked ends
		// its thread, and the children this thread forked earlier (the
		// consumers, the gateway's listener) would die with it: procCmd
		// sets Pdeathsig, which follows the forking thread, not the
		// process.
		runtime.LockOSThread()
		var res out
		if cpu >= 0 {
			var old, set unix.CPUSet
			if err := unix.SchedGetaffinity(0, &old); err != nil {
				ch <- out{err: fmt.Errorf("poller affinity: %w", err)}
				runtime.UnlockOSThread()
				return
			}
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				ch <- out{err: fmt.Errorf("poller affinity: %w", err)}
				runtime.UnlockOSThread()
				return
			}
			defer func() {
				if err := unix.SchedSetaffinity(0, &old); err != nil {
					// Neither unlock a pinned thread nor end it: park
					// the goroutine for the rest of the run.
					ch <- res
					select {}
				}
				runtime.UnlockOSThread()
				ch <- res
			}()
		} else {
			defer func() {
				runtime.UnlockOSThread()
				ch <- res
			}()
		}
		ctlErr := rc.Control(func(fd uintptr) { res.r, res.err = pollLoop(int(fd), queues, pid, pollEvery, limit) })
		if res.err == nil {
			res.err = ctlErr
		}
	}()
	o := <-ch
	return o.r, o.err
}

// The poller reads every pollEvery (-drain-poll) until the queues look
// less than fineAhead from empty, then every pollFine: the end is timed
// to about pollFine while most of the drain costs one wake-up a
// pollEvery: a wake-up costs the poller far more CPU than the read of the
// table (BENCHMARKS.md, "The poller's cost").
const (
	pollFine  = 100 * time.Microsecond
	fineAhead = 3 * time.Millisecond
)

func pollLoop(fd, queues, pid int, pollEvery time.Duration, limit time.Duration) (pollResult, error) {
	buf := make([]byte, 4096)
	totals := make([]uint64, queues)
	empty := make([]time.Time, queues)
	var first time.Time
	var filled uint64
	coarse := unix.NsecToTimespec(pollEvery.Nanoseconds())
	fine := unix.NsecToTimespec(min(pollEvery, pollFine).Nanoseconds())
	var ru0, ru1 unix.Rusage
	unix.Getrusage(unix.RUSAGE_THREAD, &ru0)
	t0 := time.Now()
	if err := unix.Kill(pid, unix.SIGCONT); err != nil {
		return pollResult{}, fmt.Errorf("SIGCONT: %w", err)
	}
	polls := 0
	var now, prev time.Time
	for {
		n, err := unix.Pread(fd, buf, 0)
		prev, now = now, time.Now()
		polls++
		if err != nil {
			return pollResult{}, fmt.Errorf("pread nfnetlink_queue: %w", err)
		}
		if !nfqstat.Totals(buf[:n], totals) {
			return pollResult{}, errors.New("a queue left the gateway's nfnetlink_queue table during the drain")
		}
		var sum uint64
		for _, v := range totals {
			sum += v
		}
		if polls == 1 {
			filled = sum
		} else if sum < filled && first.IsZero() {
			first = now
		}
		done := true
		for q, v := range totals {
			if v != 0 {
				done = false
			} else if empty[q].IsZero() {
				empty[q] = now
			}
		}
		if done {
			break
		}
		if now.Sub(t0) > limit {
			return pollResult{}, fmt.Errorf("queues not drained after %v (queue_total %v)", limit, totals)
		}
		// Fine polls once the queues look less than fineAhead from
		// empty at the rate so far; coarse ones before.
		ts := &coarse
		if done := filled - sum; done > 0 {
			el := now.Sub(t0)
			if time.Duration(float64(el)*float64(sum)/float64(done)) < fineAhead {
				ts = &fine
			}
		}
		unix.Nanosleep(ts, nil)
	}
	unix.Getrusage(unix.RUSAGE_THREAD, &ru1)
	r := pollResult{seconds: now.Sub(t0).Seconds(), polls: polls, perQueue: make([]float64, queues)}
	if !first.IsZero() {
		r.first = first.Sub(t0).Seconds()
	}
	for q := range empty {
		r.perQueue[q] = empty[q].Sub(t0).Seconds()
	}
	if polls > 1 {
		r.every = now.Sub(t0).Seconds() * 1e6 / float64(polls-1)
		r.lastGap = now.Sub(prev).Seconds() * 1e6
	}
	cpuUs := float64(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) / 1e3
	r.cpu = cpuUs / float64(polls)
	return r, nil
}

// startPerf, with -drain-perf DIR, starts a system-wide perf record (call
// graphs, cpu-clock sampling, which also samples the idle task) for the
// drain about to start and returns what stops it. For diagnosis only:
// perf's own cost lowers the figures of a run that uses it.
func (b *bench) startPerf(c consumer) func() {
	if b.perfDir == "" {
		return func() {}
	}
	b.nperf++
	out := filepath.Join(b.perfDir, fmt.Sprintf("drain-%s-q%d-%02d.data", c.Kind, c.Queues, b.nperf))
	cmd := exec.Command("perf", "record", "-a", "-g", "-F", "4999", "-o", out)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "perf record:", err)
		return func() {}
	}
	b.lab.track(cmd)
	time.Sleep(700 * time.Millisecond) // perf is sampling by then
	return func() {
		cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
}

// userHZ is the unit of /proc/stat (USER_HZ, 100 on Linux).
const userHZ = 100

// machineTicks is the whole machine's busy (user, nice, system, irq,
// softirq, steal) and idle (idle, iowait) time so far, in USER_HZ ticks
// from /proc/stat: 10 ms steps, coarse for one drain, fair summed over the
// rounds.
func machineTicks() (busy, idle uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i := 1; i < len(f) && i <= 8; i++ {
		v, _ := strconv.ParseUint(f[i], 10, 64)
		if i == 4 || i == 5 {
			idle += v
		} else {
			busy += v
		}
	}
	return busy, idle
}
