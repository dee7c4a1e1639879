package daemon

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/knockgate/knockgate/gate"
	"github.com/knockgate/knockgate/metrics"
	"github.com/knockgate/knockgate/rules"
	"github.com/knockgate/knockgate/verdict"
)

// sweepEvery is how often expired grants and stale knock progress are
// dropped. Decisions compare against expiry times themselves, so this only
// bounds how late an expiry is logged and how long memory is held.
const sweepEvery = time.Second

// Config is what a daemon starts from.
type Config struct {
	// Policy is the policy to enforce, loaded from Path.
	Policy *rules.Policy
	// Path is the policy file, re-read on every Reload.
	Path string
	// Version is the program's version, for logs, status and
	// knockgate_build_info.
	Version string
	// Logger receives the daemon's log lines; nil discards them.
	Logger *slog.Logger
	// OpenQueue opens each queue; nil opens kernel queues (gate.Open).
	OpenQueue OpenFunc
}

// Daemon holds what the running gate shares between the verdict path, the
// sweeper, the state writer, the control socket and Reload (which the
// command calls on SIGHUP). It observes decisions; it never changes a
// verdict.
type Daemon struct {
	log     *slog.Logger
	eng     *verdict.Engine
	m       *metrics.Metrics
	open    OpenFunc
	version string
	path    string  // the policy file, re-read on reload
	qs      []Queue // set by Run before anything can read it

	// gen is the running generation; Reload replaces it whole, one reload
	// at a time (reloadMu), and readers load it once and use that.
	gen      atomic.Pointer[generation]
	reloadMu sync.Mutex

	// dirty and urgent wake the state writer; each holds at most one
	// wake-up, so a burst of changes costs one write. dirty is for changes
	// that add access (a grant opened, a peer's grant): their saves are
	// coalesced, at most one per saveGap. urgent is for changes that take
	// access away or must not be replayed (a revoke, a grant used up or a
	// connection fewer, an SPA grant): saved at once.
	dirty, urgent chan struct{}

	// fleet is the cluster node, while one runs (cluster.go).
	fleet atomic.Pointer[fleet]
	// clusterPushPull, when set, replaces memberlist's full-state
	// exchange interval (tests).
	clusterPushPull time.Duration
	state           stateWriter
	// node names this gateway in status (the origin of its grants).
	node string
	// metricsErr is why the metrics endpoint is not listening, if it is
	// not (metricslisten.go); metricsRetry the first wait before a retry
	// (metricsRetryFirst when 0).
	metricsErr   atomic.Pointer[string]
	metricsRetry time.Duration
	// saveGap, when set, replaces the const saveGap (tests).
	saveGap time.Duration
	// knockLog limits the lines saying why a knock failed (knocklog.go).
	knockLog *knockLimiter
}

// generation is the policy the daemon runs, in one value: the loaded
// rules.Policy, whose verdict.Policy the engine enforces, with the daemon's
// settings beside it (queues, sockets and fail-open as bound at start, the
// state file as last loaded). A reload swaps in a new generation in one
// atomic step, so a status report, a state save or a metrics scrape sees
// one policy, never half of a reload.
type generation struct {
	pol *rules.Policy
}

// New compiles cfg's policy into an engine. Reload may be called from then
// on; Run serves the queues.
func New(cfg Config) (*Daemon, error) {
	pol := cfg.Policy
	eng, err := verdict.NewEngine(pol.Policy, time.Now())
	if err != nil {
		return nil, fmt.Errorf("failed to compile policy %s: %w", cfg.Path, err)
	}
	d := &Daemon{log: cfg.Logger, eng: eng, open: cfg.OpenQueue, version: cfg.Version, path: cfg.Path,
		dirty: make(chan struct{}, 1), urgent: make(chan struct{}, 1), knockLog: &knockLimiter{}}
	d.gen.Store(&generation{pol: pol})
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.node, err = os.Hostname(); err != nil {
		d.node = "this gateway"
	}
	if d.open == nil {
		d.open = openGate
	}
	d.m = metrics.New(cfg.Version, metrics.Sources{
		Engine:       eng.Stats,
		ActiveGrants: func() map[string]int { return eng.ActiveGrants(time.Now()) },
		Queues:       d.queueStats,
	})
	d.m.SetDoors(doorNames(pol.Policy))
	d.m.Reloaded(true, time.Now())
	return d, nil
}

func doorNames(p verdict.Policy) []string {
	names := make([]string, len(p.Doors))
	for i, d := range p.Doors {
		names[i] = d.Name
	}
	return names
}

func (d *Daemon) queueStats() []metrics.QueueStats {
	first := d.gen.Load().pol.Queue
	out := make([]metrics.QueueStats, len(d.qs))
	for i, q := range d.qs {
		st := q.Stats()
		out[i] = metrics.QueueStats{Queue: first + uint16(i), Packets: st.Packets, VerdictErrors: st.VerdictErrors,
			ENOBUFS: st.ENOBUFS, ReadErrors: st.ReadErrors, Receives: st.Receives, Sends: st.Sends}
	}
	return out
}

// Run restores the grants of the last run, serves the queues, the metrics
// endpoint and the control socket, and keeps the state file, until ctx is
// done or a queue fails; then it saves the grants for the next start.
func (d *Daemon) Run(ctx context.Context) error {
	pol := d.gen.Load().pol
	if len(pol.Doors) == 0 {
		d.log.Warn("the policy has no doors: every queued packet gets the unprotected verdict", "unprotected", pol.Unprotected.String())
	}
	// Before any queue is bound: a state file that is no regular file, is
	// one the policy names, or is another daemon's, stops the start here.
	defer d.unlockState()
	if err := d.restore(time.Now()); err != nil {
		return err
	}
	stopCluster, err := d.startCluster(ctx)
	if err != nil {
		return err
	}
	defer stopCluster()
	ctx, stop := context.WithCancel(ctx)
	defer stop()

	gcfg := gate.Config{Queue: pol.Queue, CopyRange: pol.CopyRange(), Logger: d.log, Observe: d.observe, FailOpen: pol.FailOpen}
	if pol.FailOpen {
		// The fail-open rules drop new connections to protected ports
		// that lack this mark; fail-closed rules ignore marks.
		gcfg.AcceptMark, gcfg.AcceptMask = pol.AcceptMark, pol.AcceptMask
	}
	// One queue per reader thread: the kernel spreads new connections over
	// them (--queue-balance), and each Run blocks its own goroutine.
	var qs []Queue
	for i := range pol.Queues {
		cfg := gcfg
		cfg.Queue = pol.Queue + uint16(i)
		q, err := d.open(cfg)
		if err != nil {
			return err
		}
		defer q.Close()
		qs = append(qs, q)
	}
	d.qs = qs

	allReady := make(chan struct{})
	go func() {
		for _, q := range qs {
			select {
			case <-q.Ready():
			case <-ctx.Done():
				return
			}
		}
		close(allReady)
	}()
	ready := func() bool {
		select {
		case <-allReady:
			return true
		default:
			return false
		}
	}
	if pol.MetricsListen != "" {
		d.serveMetrics(ctx, pol.MetricsListen, d.m.Handler(ready))
	}
	ln, err := ListenControl(pol.ControlSocket)
	if err != nil {
		return err
	}
	defer os.Remove(pol.ControlSocket)
	go ServeControl(ctx, ln, d, d.log)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); d.sweepLoop(ctx) }()
	go func() { defer wg.Done(); d.persistLoop(ctx, allReady) }()
	runDone := make(chan struct{})
	go func() {
		select {
		case <-allReady:
		case <-ctx.Done():
			return
		}
		d.log.Info("knockgate ready", "queue", pol.Queue, "queues", pol.Queues, "metrics", pol.MetricsListen, "control_socket", pol.ControlSocket)
		if err := sdNotify("READY=1\nSTATUS=deciding packets on queue " + rules.QueueRange(pol.Queue, pol.Queues)); err != nil {
			d.log.Warn("systemd notification failed", "err", err)
		}
		d.watchdog(ctx, runDone)
	}()

	d.log.Info("knockgate starting", "version", d.version, "policy", d.path, "queue", pol.Queue, "queues", pol.Queues,
		"doors", len(pol.Doors), "unprotected", pol.Unprotected.String())
	// The first queue to fail (to bind, in practice) stops the others.
	errs := make(chan error, len(qs))
	for _, q := range qs {
		go func() {
			err := q.Run(ctx, d.eng)
			if err != nil {
				stop()
			}
			errs <- err
		}()
	}
	for range qs {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	close(runDone)
	stop()
	wg.Wait()
	sdNotify("STOPPING=1")
	// The latest grants, for the next start; but a daemon that never
	// served its queues has nothing to say about them, and writing its
	// view (a policy that lacks a door, say) would lose grants.
	if ready() {
		d.save()
	}
	if err != nil {
		return err
	}
	var packets, malformed uint64
	for _, q := range qs {
		st := q.Stats()
		packets, malformed = packets+st.Packets, malformed+st.Malformed
	}
	d.log.Info("knockgate stopped", "packets", packets, "malformed", malformed)
	return nil
}

func (d *Daemon) markDirty() {
	select {
	case d.dirty <- struct{}{}:
	default:
	}
}

// markUrgent asks for a save at once, past saveGap: a crash right after
// must not bring back what this change took away.
func (d *Daemon) markUrgent() {
	select {
	case d.urgent <- struct{}{}:
	default:
	}
}

func (d *Daemon) sweep(now time.Time) {
	n := 0
	d.eng.Sweep(now, func(g verdict.Grant) {
		n++
		d.m.GrantExpired(g.Door)
		d.log.Info("grant expired", "door", g.Door, "source", g.Source.String(),
			"opened", g.Opened.Format(time.RFC3339), "expired", g.Until.Format(time.RFC3339))
	})
	if n > 0 {
		d.markDirty()
	}
	d.clusterSweep(now)
}

func (d *Daemon) sweepLoop(ctx context.Context) {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.sweep(now)
		}
	}
}

// saveGap is the least time between two saves for changes that only add
// access. Losing such a change to a crash means a knock again; writing the
// whole file for each of 1,000 replicated grants a second took a fifth of
// the daemon's CPU (BENCHMARKS.md, "Verdict throughput with the cluster
// on").
const saveGap = 250 * time.Millisecond

// persistLoop writes the state file after every change of grants, from
// the moment the queues are ready (before, nothing was decided). It runs
// apart from the verdict path, which only marks the state dirty, so a slow
// disk never delays a verdict.
func (d *Daemon) persistLoop(ctx context.Context, ready <-chan struct{}) {
	select {
	case <-ctx.Done():
		return
	case <-ready:
	}
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.urgent:
		case <-d.dirty:
			if wait := cmp.Or(d.saveGap, saveGap) - time.Since(last); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-d.urgent:
				case <-t.C:
				}
				t.Stop()
			}
		}
		// One save covers every change before it, urgent or not.
		select {
		case <-d.dirty:
		default:
		}
		d.save()
		last = time.Now()
	}
}
