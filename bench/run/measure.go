package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/knockgate/knockgate/cluster"
	"github.com/knockgate/knockgate/internal/netns"
	"github.com/knockgate/knockgate/internal/nfqstat"
)

// consumer is one program that serves the queue(s).
type consumer struct {
	Kind       string // refgo, refc, knockgate
	Queues     int    // 1 or 2
	MaxSources int    // knockgate's gate { max_sources }; 0 for the default
	// Cluster adds a cluster block whose peer is bench/clusterpeer,
	// publishing 1,000 grants/s while the trial runs (issue 13).
	Cluster bool
}

func (c consumer) String() string {
	s := c.Kind
	if c.Queues > 1 {
		s += fmt.Sprintf(" (%d queues)", c.Queues)
	}
	if c.Cluster {
		s += " (cluster)"
	}
	return s
}

var (
	refgo1 = consumer{Kind: "refgo", Queues: 1}
	refc1  = consumer{Kind: "refc", Queues: 1}
	kg1    = consumer{Kind: "knockgate", Queues: 1}
	kg1c   = consumer{Kind: "knockgate", Queues: 1, Cluster: true}
)

// The cluster variant's addresses, on the gateway's loopback: knockgate
// listens on one, bench/clusterpeer on the other.
const (
	clusterListen = "127.0.0.1:7946"
	clusterPeer   = "127.0.0.1:7947"
	peerRate      = 1000 // grants/s
)

// bench holds the paths and the lab of one run.
type bench struct {
	lab      *lab
	dir      string // scratch
	loadgen  string
	refgo    string
	refc     string // "" when it could not be built
	peer     string // bench/clusterpeer
	kg       string
	genCPU   string
	consCPU  string
	steer    steering
	steerSet bool
	nstart   int
	perfDir  string // -drain-perf
	nperf    int
}

// policy is knockgate's realistic bench policy: three knock doors (one
// with a close sequence, one with allow_from, one with max_connections)
// and an SPA door, protecting tcp/22, tcp/443, tcp/2222 and tcp/8443. The
// SPA keys are the published placeholders of contrib/examples/spa.hcl,
// which a bench may use (allow_published_keys).
func (b *bench) policy(c consumer) string {
	extra := ""
	if c.Queues > 1 {
		extra = fmt.Sprintf("  queues         = %d\n", c.Queues)
	}
	maxSrc := c.MaxSources
	if maxSrc == 0 {
		maxSrc = 100000
	}
	return fmt.Sprintf(`gate {
  queue          = 0
%s  unprotected    = "accept"
  max_sources    = %d
  state_file     = ""
  control_socket = %q
}

metrics {
  listen = "127.0.0.1:8789"
}

door "ssh" {
  sequence       = ["tcp/7000", "udp/8000", "tcp/9000"]
  open           = ["tcp/22"]
  close_sequence = ["tcp/9100", "tcp/9200"]
}

door "admin" {
  sequence   = ["tcp/3000", "tcp/4000", "tcp/5000"]
  open       = ["tcp/8443"]
  open_for   = "60s"
  allow_from = ["198.51.100.0/24", "2001:db8::/32"]
}

door "lan" {
  sequence        = ["udp/6100", "tcp/6200", "udp/6300"]
  open            = ["tcp/2222"]
  max_connections = 1
}

door "nas" {
  spa {
    port            = "udp/62201"
    key_base64      = "RVhBTVBMRS1LRVktdXNlLWtub2NrZ2F0ZS1rZXlnZW4="
    hmac_key_base64 = "RVhBTVBMRS1ITUFDLUtFWS1wdWJsaXNoZWQtaW4tZG9jcy1yZXBsYWNlLXdpdGgta25vY2tnYXRlLWtleWdlbg=="
    allow_published_keys = true
  }
  open = ["tcp/22", "tcp/443"]
}
`, extra, maxSrc, filepath.Join(b.dir, "kg.sock")) + b.clusterBlock(c)
}

// clusterBlock is the policy's cluster block for c, if any.
func (b *bench) clusterBlock(c consumer) string {
	if !c.Cluster {
		return ""
	}
	return fmt.Sprintf(`
cluster {
  node        = "bench-gw"
  listen      = %q
  peers       = [%q]
  secret_file = %q
}
`, clusterListen, clusterPeer, b.clusterKey())
}

func (b *bench) clusterKey() string { return filepath.Join(b.dir, "cluster.key") }

// writePolicy writes c's policy and returns its path.
func (b *bench) writePolicy(c consumer) (string, error) {
	p := filepath.Join(b.dir, fmt.Sprintf("policy-q%d-s%d-c%t.hcl", c.Queues, c.MaxSources, c.Cluster))
	if c.Cluster {
		if err := os.WriteFile(b.clusterKey(), cluster.FormatKey(cluster.NewKey()), 0o600); err != nil {
			return "", err
		}
	}
	return p, os.WriteFile(p, []byte(b.policy(c)), 0o600)
}

// kgSupports reports whether this knockgate build accepts c's policy
// (gate { queues } is new).
func (b *bench) kgSupports(c consumer) (bool, string) {
	p, err := b.writePolicy(c)
	if err != nil {
		return false, err.Error()
	}
	out, err := exec.Command(b.kg, "validate", "--config", p).CombinedOutput()
	if err != nil {
		first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return false, first
	}
	return true, ""
}

func (b *bench) setSteering(m steering) error {
	if b.steerSet && b.steer == m {
		return nil
	}
	if err := b.lab.setSteering(m); err != nil {
		return err
	}
	b.steer, b.steerSet = m, true
	return nil
}

// running is a started consumer.
type running struct {
	c    consumer
	cmd  *exec.Cmd
	done chan struct{}
	log  string
	// peer is bench/clusterpeer, for a Cluster consumer.
	peer     *exec.Cmd
	peerDone chan struct{}
}

// start runs c in the gateway pinned to cpus and waits until its queues are
// bound with the copy range set.
func (b *bench) start(ctx context.Context, c consumer, cpus string) (*running, error) {
	var cmd *exec.Cmd
	switch c.Kind {
	case "refgo":
		cmd = procCmd(ctx, nsGW, cpus, b.refgo, "-queue", "0", "-queues", strconv.Itoa(c.Queues))
	case "refc":
		if b.refc == "" {
			return nil, errors.New("refc was not built")
		}
		cmd = procCmd(ctx, nsGW, cpus, b.refc, "0", strconv.Itoa(c.Queues))
	case "knockgate":
		p, err := b.writePolicy(c)
		if err != nil {
			return nil, err
		}
		cmd = procCmd(ctx, nsGW, cpus, b.kg, "run", "--config", p, "--log-level", "info")
	default:
		return nil, fmt.Errorf("unknown consumer %q", c.Kind)
	}
	b.nstart++
	logPath := filepath.Join(b.dir, fmt.Sprintf("%s-%03d.log", c.Kind, b.nstart))
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	f.Close()
	b.lab.track(cmd)
	r := &running{c: c, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { cmd.Wait(); close(r.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, _ := readQueues(b.lab.gwPID())
		bound := 0
		for q := 0; q < c.Queues; q++ {
			if s, ok := m[uint16(q)]; ok && s.PortID != 0 && s.CopyRange > 0 {
				bound++
			}
		}
		if bound == c.Queues {
			break
		}
		select {
		case <-r.done:
			out, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("%s exited before binding its queues: %s", c, strings.TrimSpace(string(out)))
		case <-ctx.Done():
			b.stop(r)
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.stop(r)
			return nil, fmt.Errorf("%s did not bind its queues within 10s", c)
		}
	}
	// The queue length is set right after the copy range.
	time.Sleep(150 * time.Millisecond)
	if c.Cluster {
		if err := b.startPeer(ctx, r); err != nil {
			b.stop(r)
			return nil, err
		}
	}
	return r, nil
}

// startPeer runs bench/clusterpeer beside r, on the generator's CPU (a
// peer is another machine; it must not take the consumer's), and waits
// until it has joined and publishes. It publishes for at most a minute
// and 60,000 grants; stop ends it sooner.
func (b *bench) startPeer(ctx context.Context, r *running) error {
	cmd := procCmd(ctx, nsGW, b.genCPU, b.peer, "-bind", clusterPeer, "-peer", clusterListen, "-key", b.clusterKey(),
		"-door", "ssh", "-open-for", "10s", "-rate", strconv.Itoa(peerRate), "-for", "60s", "-count", "60000")
	f, err := os.Create(r.log + ".peer")
	if err != nil {
		return err
	}
	cmd.Stderr = f
	out, err := cmd.StdoutPipe()
	if err != nil {
		f.Close()
		return err
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return err
	}
	b.lab.track(cmd)
	r.peer, r.peerDone = cmd, make(chan struct{})
	joined := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		first := true
		for sc.Scan() {
			if first {
				joined <- sc.Text() == "publishing"
				first = false
			}
			fmt.Fprintln(f, sc.Text())
		}
		if first {
			joined <- false
		}
		cmd.Wait()
		// Its last line, what it sent, comes at SIGTERM.
		f.Close()
		close(r.peerDone)
	}()
	select {
	case ok := <-joined:
		if !ok {
			<-r.peerDone
			log, _ := os.ReadFile(r.log + ".peer")
			return fmt.Errorf("clusterpeer did not join: %s", strings.TrimSpace(string(log)))
		}
		return nil
	case <-time.After(15 * time.Second):
		return errors.New("clusterpeer did not join within 15s")
	}
}

// stop ends a consumer (SIGTERM, then SIGKILL) and waits for its queues to
// be gone. A consumer left stopped (drain mode) is resumed to take the
// SIGTERM.
func (b *bench) stop(r *running) {
	if r.peer != nil {
		terminate(r.peer, r.peerDone)
	}
	r.cmd.Process.Signal(syscall.SIGCONT)
	terminate(r.cmd, r.done)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		m, _ := readQueues(b.lab.gwPID())
		gone := true
		for q := 0; q < r.c.Queues; q++ {
			if _, ok := m[uint16(q)]; ok {
				gone = false
			}
		}
		if gone {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// terminate sends cmd a SIGTERM and waits until done is closed (cmd has
// exited), killing cmd's process group if it has not within 3 s.
func terminate(cmd *exec.Cmd, done <-chan struct{}) {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// genSpec is one load generator run.
type genSpec struct {
	Dst     string
	Port    int
	Count   int
	Max     time.Duration
	Rate    int
	Src     string
	Sources int
	CPUs    string
}

// genResult is what the bench reads of loadgen's JSON.
type genResult struct {
	Sent    int     `json:"sent"`
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate"`
}

func (b *bench) loadgenRun(ctx context.Context, g genSpec) (genResult, error) {
	args := []string{"-dst", g.Dst, "-port", strconv.Itoa(g.Port), "-count", strconv.Itoa(g.Count),
		"-duration", g.Max.String(), "-rate", strconv.Itoa(g.Rate)}
	if g.Src != "" {
		args = append(args, "-src", g.Src)
	}
	if g.Sources > 0 {
		args = append(args, "-sources", strconv.Itoa(g.Sources))
	}
	ctx, cancel := context.WithTimeout(ctx, g.Max+10*time.Second)
	defer cancel()
	var r genResult
	err := runJSON(procCmd(ctx, nsClient, g.CPUs, b.loadgen, args...), "loadgen", &r)
	return r, err
}

// runJSON runs cmd, one of the bench's programs that print one JSON
// object, and decodes what it printed into v.
func runJSON(cmd *exec.Cmd, what string, v any) error {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", what, err, strings.TrimSpace(errb.String()))
	}
	if err := json.Unmarshal(out.Bytes(), v); err != nil {
		return fmt.Errorf("%s output %q: %w", what, out.String(), err)
	}
	return nil
}

// tputResult is one throughput trial.
type tputResult struct {
	Gen                genResult
	Delivered          uint64  // packets queued to the consumer (id_sequence - user_dropped)
	QDropped, UDropped uint64  // queue full; socket buffer full
	Window             float64 // seconds during which packets were queued
	Rate               float64 // verdicts per second over the window
	Loss               float64 // 1 - delivered/sent
	Saturated          bool    // the kernel dropped: the consumer was the bottleneck
	CPUPerVerdict      float64 // consumer's CPU time (user + system, all threads) per packet, µs
}

// cpuNs is the CPU time in ns of every thread of process pid
// (/proc/PID/task/*/schedstat, first field). It includes the kernel work
// done in the process's system calls, such as reinjecting an accepted
// packet.
func cpuNs(pid int) uint64 {
	dirs, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum uint64
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			v, _ := strconv.ParseUint(f[0], 10, 64)
			sum += v
		}
	}
	return sum
}

// delivered sums id_sequence - user_dropped over queues 0..n-1.
func delivered(m map[uint16]nfqstat.Queue, n int) (v, qd, ud, total uint64) {
	for q := 0; q < n; q++ {
		s := m[uint16(q)]
		v += s.IDSequence - s.UserDropped
		qd += s.Dropped
		ud += s.UserDropped
		total += s.Total
	}
	return
}

// throughput runs one trial: consumer c (nil: none) under steering m,
// loadgen g, and the gateway's queue counters sampled every 5ms. after,
// when set, runs while the consumer still runs.
func (b *bench) throughput(ctx context.Context, c consumer, m steering, g genSpec, after func()) (tputResult, error) {
	if err := b.setSteering(m); err != nil {
		return tputResult{}, err
	}
	r, err := b.start(ctx, c, b.consCPUFor(g))
	if err != nil {
		return tputResult{}, err
	}
	defer b.stop(r)
	pid := b.lab.gwPID()
	m0, err := readQueues(pid)
	if err != nil {
		return tputResult{}, err
	}
	v0, qd0, ud0, _ := delivered(m0, c.Queues)
	cpu0 := cpuNs(r.cmd.Process.Pid)

	type sample struct {
		t time.Time
		v uint64
	}
	var (
		mu      sync.Mutex
		samples []sample
	)
	stopS := make(chan struct{})
	sdone := make(chan struct{})
	go func() {
		defer close(sdone)
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for {
			if mm, err := readQueues(pid); err == nil {
				v, _, _, _ := delivered(mm, c.Queues)
				mu.Lock()
				samples = append(samples, sample{time.Now(), v})
				mu.Unlock()
			}
			select {
			case <-stopS:
				return
			case <-tk.C:
			}
		}
	}()
	gen, gerr := b.loadgenRun(ctx, g)
	// Drain: wait until the queues are empty and the count holds still.
	var last uint64
	stable := 0
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && stable < 10 {
		mm, _ := readQueues(pid)
		v, _, _, total := delivered(mm, c.Queues)
		if total == 0 && v == last {
			stable++
		} else {
			stable = 0
		}
		last = v
		time.Sleep(5 * time.Millisecond)
	}
	close(stopS)
	<-sdone
	cpu1 := cpuNs(r.cmd.Process.Pid)
	if gerr != nil {
		return tputResult{}, gerr
	}
	select {
	case <-r.done:
		out, _ := os.ReadFile(r.log)
		return tputResult{}, fmt.Errorf("%s exited during the trial: %s", c, strings.TrimSpace(string(out)))
	default:
	}
	m1, err := readQueues(pid)
	if err != nil {
		return tputResult{}, err
	}
	v1, qd1, ud1, _ := delivered(m1, c.Queues)
	res := tputResult{Gen: gen, Delivered: v1 - v0, QDropped: qd1 - qd0, UDropped: ud1 - ud0}
	if res.Delivered > 0 && cpu1 > cpu0 {
		res.CPUPerVerdict = float64(cpu1-cpu0) / 1e3 / float64(res.Delivered)
	}
	// The window: from the last sample before the count moved to the first
	// sample with the final count.
	mu.Lock()
	var start, end time.Time
	for i, s := range samples {
		if s.v > v0 && start.IsZero() {
			if i > 0 {
				start = samples[i-1].t
			} else {
				start = s.t
			}
		}
		if s.v >= v1 {
			end = s.t
			break
		}
	}
	mu.Unlock()
	if !start.IsZero() && end.After(start) {
		res.Window = end.Sub(start).Seconds()
		res.Rate = float64(res.Delivered) / res.Window
	}
	if gen.Sent > 0 {
		res.Loss = 1 - float64(res.Delivered)/float64(gen.Sent)
		if res.Loss < 0 {
			res.Loss = 0
		}
	}
	res.Saturated = res.QDropped+res.UDropped > 0
	if after != nil {
		after()
	}
	return res, nil
}

// consCPUFor pins the consumer: on consCPU when the generator is pinned,
// anywhere when it is not (the scaling runs).
func (b *bench) consCPUFor(g genSpec) string {
	if g.CPUs == "" {
		return ""
	}
	return b.consCPU
}

// latency times n sequential connects through the gateway with consumer c,
// or with no queue rule at all when c is nil.
func (b *bench) latency(ctx context.Context, c *consumer, n int) (latencyResult, error) {
	mode := steerNone
	if c != nil {
		mode = steerQueue0
	}
	if err := b.setSteering(mode); err != nil {
		return latencyResult{}, err
	}
	if c != nil {
		r, err := b.start(ctx, *c, b.consCPU)
		if err != nil {
			return latencyResult{}, err
		}
		defer b.stop(r)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := procCmd(ctx, nsClient, b.genCPU, b.lab.self, "probe-connect",
		"-dst", fmt.Sprintf("%s:%d", gwAddr4, listenPort), "-n", strconv.Itoa(n), "-max", "30s")
	var res latencyResult
	if err := runJSON(cmd, "probe-connect", &res); err != nil {
		return latencyResult{}, err
	}
	if res.N == 0 {
		return res, fmt.Errorf("no connect succeeded (%d failed)", res.Failed)
	}
	return res, nil
}

// metricValue scrapes knockgate's /metrics inside the gateway and sums the
// series of name.
func metricValue(name string) (float64, error) {
	var body []byte
	err := netns.Do(nsGW, func() error {
		c, err := dialHTTP("127.0.0.1:8789", "/metrics")
		body = c
		return err
	})
	if err != nil {
		return 0, err
	}
	var sum float64
	found := false
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		series := f[0]
		if series == name || strings.HasPrefix(series, name+"{") {
			v, err := strconv.ParseFloat(f[1], 64)
			if err == nil {
				sum += v
				found = true
			}
		}
	}
	if !found {
		return 0, fmt.Errorf("no series %s", name)
	}
	return sum, nil
}

// dialHTTP GETs path from addr over a socket made on the calling thread
// (net/http would dial from another goroutine, outside the namespace).
func dialHTTP(addr, path string) ([]byte, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr)
	b, err := io.ReadAll(c)
	if err != nil {
		return nil, err
	}
	_, body, ok := bytes.Cut(b, []byte("\r\n\r\n"))
	if !ok {
		return nil, errors.New("no HTTP body")
	}
	return body, nil
}
