package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/knockgate/knockgate/internal/logbuf"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/knockgate/knockgate/gate"
	"github.com/knockgate/knockgate/rules"
	"github.com/knockgate/knockgate/verdict"
)

// fakeQueue is a queue without a kernel: Run hands each packet fed to it
// to the decider, then to the observer the daemon configured, as a
// gate.Queue does with the packets the kernel queues.
type fakeQueue struct {
	cfg   gate.Config
	in    chan verdict.Packet
	out   chan verdict.Decision
	ready chan struct{}

	packets, accepted, dropped atomic.Uint64
	closed                     atomic.Bool
}

func newFakeQueue(cfg gate.Config) *fakeQueue {
	return &fakeQueue{cfg: cfg, in: make(chan verdict.Packet), out: make(chan verdict.Decision), ready: make(chan struct{})}
}

func (q *fakeQueue) Run(ctx context.Context, d gate.Decider) error {
	close(q.ready)
	for {
		select {
		case <-ctx.Done():
			return nil
		case p := <-q.in:
			now := time.Now()
			dec := d.Decide(p, now)
			q.packets.Add(1)
			if dec.Verdict == verdict.Accept {
				q.accepted.Add(1)
			} else {
				q.dropped.Add(1)
			}
			q.cfg.Observe(p, dec, time.Since(now))
			q.out <- dec
		}
	}
}

func (q *fakeQueue) Ready() <-chan struct{} { return q.ready }

func (q *fakeQueue) Stats() gate.Stats {
	return gate.Stats{Packets: q.packets.Load(), Accepted: q.accepted.Load(), Dropped: q.dropped.Load()}
}

func (q *fakeQueue) Close() error { q.closed.Store(true); return nil }

// feed queues one packet and returns the decision taken for it.
func (q *fakeQueue) feed(t *testing.T, p verdict.Packet) verdict.Decision {
	t.Helper()
	select {
	case q.in <- p:
	case <-time.After(5 * time.Second):
		t.Fatal("the queue does not take packets")
	}
	return <-q.out
}

func knock(src string, port uint16) verdict.Packet {
	return verdict.Packet{Src: netip.MustParseAddr(src), Proto: verdict.UDP, SrcPort: 40000, DstPort: port}
}

func syn(src string, port uint16) verdict.Packet {
	return verdict.Packet{Src: netip.MustParseAddr(src), Proto: verdict.TCP, SrcPort: 40000, DstPort: port, TCPFlags: verdict.FlagSYN}
}

// lab is a daemon running on fake queues, with its policy, state file and
// control socket in a test directory.
type lab struct {
	t      *testing.T
	dir    string
	policy string
	d      *Daemon
	qs     []*fakeQueue
	logs   *logbuf.Buffer
	cancel context.CancelFunc
	done   chan error
	// tweak, when set, changes the loaded policy before the daemon
	// starts on it (cluster_test.go: a listen port of 0).
	tweak func(*rules.Policy)
	// metricsRetry, when set, is the daemon's first wait before it
	// retries a metrics listener.
	metricsRetry time.Duration
	// saveGap, when set, is the daemon's least time between two saves
	// that only add access.
	saveGap time.Duration
}

// freshSPAKeys makes an SPA door's key_base64 and hmac_key_base64 for one
// test: knockgate refuses the keys its own examples publish.
func freshSPAKeys() (key, hmacKey string) {
	k, h := make([]byte, 32), make([]byte, 64)
	rand.Read(k)
	rand.Read(h)
	return base64.StdEncoding.EncodeToString(k), base64.StdEncoding.EncodeToString(h)
}

// settings is the gate block of every test policy: files in dir, and
// tables a thousand entries large, which the race detector fills in
// milliseconds rather than the defaults' seconds. The metrics endpoint is
// off: on its default port, labs (of this test binary or of another run
// on the machine) would fight over it.
func settings(dir string, extra string) string {
	return fmt.Sprintf("gate {\n  state_file = %q\n  control_socket = %q\n  max_sources = 1000\n  max_grants = 1000\n  max_replay = 1000\n%s}\n%s",
		filepath.Join(dir, "state.json"), filepath.Join(dir, "kg.sock"), extra, noMetrics)
}

const noMetrics = "metrics {\n  listen = \"\"\n}\n"

// The doors of the test policies: knock two UDP ports, the first and the
// next, and a TCP port opens for an hour.
const (
	sshDoor = `
door "ssh" {
  sequence = ["udp/7000", "udp/7001"]
  open     = ["tcp/22"]
  open_for = "1h"
}
`
	webDoor = `
door "web" {
  sequence = ["udp/8000", "udp/8001"]
  open     = ["tcp/443"]
  open_for = "1h"
}
`
	twoDoors = sshDoor + webDoor
)

// writePolicy writes the lab's policy file: the gate block, then doors.
// A test whose doors bring a metrics block of their own gets it in place
// of the labs' "metrics off".
func (l *lab) writePolicy(gateExtra, doors string) {
	l.t.Helper()
	src := settings(l.dir, gateExtra)
	if strings.HasPrefix(doors, "metrics {") || strings.Contains(doors, "\nmetrics {") {
		src = strings.Replace(src, noMetrics, "", 1)
	}
	if err := os.WriteFile(l.policy, []byte(src+doors), 0o600); err != nil {
		l.t.Fatal(err)
	}
}

// startLab starts a daemon on the policy made of gateExtra and doors, and
// waits until its queues are ready. The daemon stops when the test ends.
func startLab(t *testing.T, gateExtra, doors string) *lab {
	t.Helper()
	l := newLab(t)
	l.writePolicy(gateExtra, doors)
	l.start()
	return l
}

func newLab(t *testing.T) *lab {
	dir := t.TempDir()
	return &lab{t: t, dir: dir, policy: filepath.Join(dir, "policy.hcl")}
}

func (l *lab) start() {
	t := l.t
	t.Helper()
	pol, err := rules.Load(l.policy)
	if err != nil {
		t.Fatal(err)
	}
	if l.tweak != nil {
		l.tweak(pol)
	}
	l.logs = &logbuf.Buffer{}
	l.qs = nil
	var mu sync.Mutex
	l.d, err = New(Config{Policy: pol, Path: l.policy, Version: "test", Logger: slog.New(slog.NewJSONHandler(l.logs, nil)),
		OpenQueue: func(cfg gate.Config) (Queue, error) {
			q := newFakeQueue(cfg)
			mu.Lock()
			l.qs = append(l.qs, q)
			mu.Unlock()
			return q, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	l.d.metricsRetry = l.metricsRetry
	l.d.saveGap = l.saveGap
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan error, 1)
	go func() { l.done <- l.d.Run(ctx) }()
	deadline := time.After(5 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(l.dir, "kg.sock")); err == nil {
			mu.Lock()
			n := len(l.qs)
			mu.Unlock()
			if n == pol.Queues {
				break
			}
		}
		select {
		case err := <-l.done:
			t.Fatalf("the daemon stopped: %v", err)
		case <-deadline:
			t.Fatal("the daemon did not start")
		case <-time.After(5 * time.Millisecond):
		}
	}
	for _, q := range l.qs {
		<-q.ready
	}
	t.Cleanup(l.stop)
}

// stop stops the daemon and returns Run's error; it may run twice.
func (l *lab) stop() {
	if l.cancel == nil {
		return
	}
	l.cancel()
	l.cancel = nil
	select {
	case err := <-l.done:
		if err != nil {
			l.t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		l.t.Error("the daemon did not stop")
	}
}

// open knocks door's two-knock sequence from src.
func (l *lab) open(src string, first uint16) {
	l.t.Helper()
	for _, port := range []uint16{first, first + 1} {
		l.qs[0].feed(l.t, knock(src, port))
	}
}

// grants lists the status report's grants as "door source".
func grants(st *StatusReport) []string {
	var out []string
	for _, d := range st.Doors {
		for _, g := range d.Grants {
			out = append(out, d.Name+" "+g.Source.String())
		}
	}
	return out
}

// savedGrants reads the state file's grants as "door source".
func (l *lab) savedGrants() []string {
	l.t.Helper()
	st, err := loadState(filepath.Join(l.dir, "state.json"))
	if err != nil {
		l.t.Fatal(err)
	}
	var out []string
	for _, g := range st.grants {
		out = append(out, g.Door+" "+g.Source.String())
	}
	return out
}

// eventually retries cond until it holds or a few seconds pass: the state
// writer runs apart from the verdict path.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 5s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func same(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

// logLines returns the log's lines whose message is msg, each as its
// attributes.
func (l *lab) logLines(msg string) []map[string]any {
	l.t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			l.t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// failingQueue fails to bind, as a gate.Queue does when another program
// holds its queue number.
type failingQueue struct{ *fakeQueue }

func (q failingQueue) Run(context.Context, gate.Decider) error {
	return fmt.Errorf("failed to bind queue %d: device or resource busy", q.cfg.Queue)
}

// The first queue that fails stops the others and the daemon, and Run says
// why. A daemon whose queues never all became ready writes no state file:
// it decided nothing, and its view (a policy without a door that is live
// elsewhere, say) would lose grants.
func TestRunStopsWhenAQueueFails(t *testing.T) {
	l := newLab(t)
	l.writePolicy("  queue = 4\n  queues = 2\n", twoDoors)
	now := time.Now()
	saved := filepath.Join(l.dir, "state.json")
	if err := saveState(saved, state{grants: []verdict.Grant{{Door: "gone", Source: netip.MustParseAddr("198.51.100.7"),
		Opened: now, Until: now.Add(time.Hour)}}}, now, nil); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(saved)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := rules.Load(l.policy)
	if err != nil {
		t.Fatal(err)
	}
	var opened []*fakeQueue
	d, err := New(Config{Policy: pol, Path: l.policy, OpenQueue: func(cfg gate.Config) (Queue, error) {
		q := newFakeQueue(cfg)
		opened = append(opened, q)
		if cfg.Queue == 5 {
			return failingQueue{q}, nil
		}
		return q, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(context.Background()) }()
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
	if err == nil || !strings.Contains(err.Error(), "failed to bind queue 5") {
		t.Fatalf("Run = %v, want queue 5's error", err)
	}
	if len(opened) != 2 || !opened[0].closed.Load() || !opened[1].closed.Load() {
		t.Fatalf("queues not closed: %d opened", len(opened))
	}
	if after, err := os.ReadFile(saved); err != nil || !bytes.Equal(after, before) {
		t.Fatalf("a daemon that never served its queues rewrote the state file (%v):\n%s", err, after)
	}
}
