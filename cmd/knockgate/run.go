package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"sync"
	"syscall"
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

func cmdRun(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", "--config FILE",
		"Run the gate in the foreground: read the packets that the steering rules\n"+
			"queue, decide each one from the policy, and log every grant, revoke and\n"+
			"expiry. Needs CAP_NET_ADMIN.\n\n"+
			"Signals: SIGHUP re-reads the policy (grants and knocks in progress of\n"+
			"doors that remain are kept; an invalid policy is refused and the running\n"+
			"one stays); SIGINT and SIGTERM stop the daemon. Grants are saved to the\n"+
			"policy's state_file and restored on start.", stderr)
	config := fs.String("config", "/etc/knockgate/policy.hcl", "policy `file`")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug (every knock), info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	pol, err := loadPolicy(*config, stderr)
	if err != nil {
		return err
	}
	eng, err := verdict.NewEngine(pol.Policy, time.Now())
	if err != nil {
		return fmt.Errorf("failed to compile policy %s: %w", *config, err)
	}
	d := &daemon{log: logger, eng: eng, path: *config, pol: pol, dirty: make(chan struct{}, 1)}
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		runtime.GOMAXPROCS(procsFor(pol.Queues, runtime.GOMAXPROCS(0)))
	}
	if len(pol.Doors) == 0 {
		logger.Warn("the policy has no doors: every queued packet gets the unprotected verdict", "unprotected", pol.Unprotected.String())
	}
	d.restore(time.Now())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	gcfg := gate.Config{Queue: pol.Queue, CopyRange: copyRange(pol.Policy), Logger: logger, Observe: d.observe, FailOpen: pol.FailOpen}
	if pol.FailOpen {
		// The fail-open rules drop new connections to protected ports
		// that lack this mark; fail-closed rules ignore marks.
		gcfg.AcceptMark, gcfg.AcceptMask = pol.AcceptMark, pol.AcceptMask
	}
	// One queue per reader thread: the kernel spreads new connections over
	// them (--queue-balance), and each Run blocks its own goroutine.
	var qs []*gate.Queue
	for i := range pol.Queues {
		cfg := gcfg
		cfg.Queue = pol.Queue + uint16(i)
		q, err := gate.Open(cfg)
		if err != nil {
			return err
		}
		defer q.Close()
		qs = append(qs, q)
	}
	d.qs = qs

	d.m = metrics.New(version, metrics.Sources{
		Engine:       eng.Stats,
		ActiveGrants: func() map[string]int { return eng.ActiveGrants(time.Now()) },
		Queues: func() []metrics.QueueStats {
			out := make([]metrics.QueueStats, len(qs))
			for i, q := range qs {
				st := q.Stats()
				out[i] = metrics.QueueStats{Queue: pol.Queue + uint16(i), Packets: st.Packets, VerdictErrors: st.VerdictErrors,
					ENOBUFS: st.ENOBUFS, ReadErrors: st.ReadErrors, Receives: st.Receives, Sends: st.Sends}
			}
			return out
		},
	})
	d.m.SetDoors(doorNames(pol.Policy))
	d.m.Reloaded(true, time.Now())
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
		if err := metrics.Serve(ctx, pol.MetricsListen, d.m.Handler(ready), logger); err != nil {
			return err
		}
	}
	ln, err := listenControl(pol.ControlSocket)
	if err != nil {
		return err
	}
	defer os.Remove(pol.ControlSocket)
	go serveControl(ctx, ln, d, logger)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); d.sweepLoop(ctx) }()
	go func() { defer wg.Done(); d.persistLoop(ctx) }()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				d.reload("SIGHUP")
			}
		}
	}()
	runDone := make(chan struct{})
	go func() {
		select {
		case <-allReady:
		case <-ctx.Done():
			return
		}
		logger.Info("knockgate ready", "queues", rules.QueueRange(pol.Queue, pol.Queues), "metrics", pol.MetricsListen, "control_socket", pol.ControlSocket)
		if err := sdNotify("READY=1\nSTATUS=deciding packets on queue " + rules.QueueRange(pol.Queue, pol.Queues)); err != nil {
			logger.Warn("systemd notification failed", "err", err)
		}
		d.watchdog(ctx, runDone)
	}()

	logger.Info("knockgate starting", "version", version, "policy", *config, "queues", rules.QueueRange(pol.Queue, pol.Queues),
		"doors", len(pol.Doors), "unprotected", pol.Unprotected.String())
	// The first queue to fail (to bind, in practice) stops the others.
	errs := make(chan error, len(qs))
	for _, q := range qs {
		go func() {
			err := q.Run(ctx, eng)
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
	d.save() // the latest grants, for the next start
	if err != nil {
		return err
	}
	var packets, malformed uint64
	for _, q := range qs {
		st := q.Stats()
		packets, malformed = packets+st.Packets, malformed+st.Malformed
	}
	logger.Info("knockgate stopped", "packets", packets, "malformed", malformed)
	return nil
}

// procsFor is the GOMAXPROCS to run queues readers with, given the current
// one. Each reader spends most of its time in the kernel, and a reader back
// from a long system call (a verdict write for 64 packets runs their
// reinjection, hundreds of µs) needs a free P, Go's scheduler slot, before
// it reads again. With no more Ps than cores the runtime may have handed
// the reader's P elsewhere, and packets wait while a core idles: two queues
// on two cores drained 1.55x one queue at GOMAXPROCS=2 and 1.72x at 4, back
// to back (make bench, drain mode). A P for every reader and two for the
// rest of the daemon keep one free for each reader; never fewer than the
// runtime's own choice.
func procsFor(queues, current int) int {
	return max(current, queues+2)
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("invalid --log-format %q: want text or json", format)
}

// copyRange is how much of each packet the kernel copies to us: the
// headers for knocks, and whole datagrams when SPA payloads must be read.
// It is fixed when the queue is bound, so a reload that adds the first SPA
// door needs a restart; the daemon says so.
func copyRange(p verdict.Policy) uint32 {
	for _, d := range p.Doors {
		if d.SPA != nil {
			return 2048 // fwknop payloads stay well under a 1500-byte MTU
		}
	}
	return gate.DefaultCopyRange
}

func doorNames(p verdict.Policy) []string {
	names := make([]string, len(p.Doors))
	for i, d := range p.Doors {
		names[i] = d.Name
	}
	return names
}

// daemon holds what the running gate shares between the verdict path, the
// sweeper, the state writer, the control socket and signal handling. It
// observes decisions; it never changes a verdict.
type daemon struct {
	log  *slog.Logger
	eng  *verdict.Engine
	m    *metrics.Metrics // nil in tests that need no metrics
	qs   []*gate.Queue    // none in tests that run no queue
	path string           // the policy file, re-read on reload

	reloadMu sync.Mutex // one reload at a time
	pol      *rules.Policy

	// dirty wakes the state writer; it holds at most one wake-up, so a
	// burst of grants costs one write.
	dirty chan struct{}
}

func (d *daemon) doorName(i int) string {
	doors := d.eng.Policy().Doors
	if i < 0 || i >= len(doors) {
		return ""
	}
	return doors[i].Name
}

func (d *daemon) markDirty() {
	select {
	case d.dirty <- struct{}{}:
	default:
	}
}

// observe runs for every packet on the verdict path, so it does nothing
// costly unless the decision changed a grant or debug logging is on.
func (d *daemon) observe(p verdict.Packet, dec verdict.Decision, took time.Duration) {
	if d.m != nil {
		d.m.Observe(dec, took)
	}
	if dec.GrantEnded {
		d.log.Info("grant used up", "door", d.doorName(dec.Door), "source", p.Src.String(), "by", "max_connections")
		d.markDirty()
	}
	if dec.Banned {
		d.log.Warn("source penalized: its knocks and SPA packets are ignored for a while", "source", p.Src.String(),
			"last", dec.Reason.String(), "ban", d.eng.Policy().Penalty.Ban.String())
	}
	switch dec.Reason {
	case verdict.ReasonKnockReplay:
		d.log.Warn("TOTP sequence replayed by another source", "door", d.doorName(dec.Door), "source", p.Src.String())
		return
	case verdict.ReasonOpened:
		pol := d.eng.Policy()
		if dec.Door < 0 || dec.Door >= len(pol.Doors) {
			return // a reload renumbered the doors in between
		}
		door := pol.Doors[dec.Door]
		by, ports := "knock", fmt.Sprint(door.Open)
		if door.SPA != nil && p.Proto == door.SPA.Port.Proto && p.DstPort == door.SPA.Port.Num {
			// An SPA grant covers the ports the packet asked for, and a
			// client timeout may shorten it; status shows the details.
			by, ports = "spa", "as requested"
		}
		d.log.Info("grant opened", "door", door.Name, "source", p.Src.String(), "by", by,
			"open_for", door.OpenFor.String(), "ports", ports)
		d.markDirty()
		return
	case verdict.ReasonClosed:
		d.log.Info("grant revoked", "door", d.doorName(dec.Door), "source", p.Src.String(), "by", "close_sequence")
		d.markDirty()
		return
	case verdict.ReasonSPAStale, verdict.ReasonSPASource, verdict.ReasonSPAPorts, verdict.ReasonSPACommand:
		// An authenticated packet that was refused: it is in the replay
		// cache now, which the state file must keep; and an operator
		// wants to know that a key holder was turned away.
		d.log.Warn("SPA packet refused", "door", d.doorName(dec.Door), "source", p.Src.String(), "reason", dec.Reason.String())
		d.markDirty()
		return
	}
	if !d.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	if dec.Reset != verdict.NoDoor {
		d.log.Debug("knock sequence reset", "door", d.doorName(dec.Reset), "source", p.Src.String(),
			"packet", verdict.Port{Proto: p.Proto, Num: p.DstPort}.String())
	}
	switch dec.Reason {
	case verdict.ReasonSPAInvalid, verdict.ReasonSPAReplay, verdict.ReasonSPARateLimited:
		d.log.Debug("spa packet refused", "door", d.doorName(dec.Door), "source", p.Src.String(), "reason", dec.Reason.String())
	case verdict.ReasonKnock, verdict.ReasonNotAllowed, verdict.ReasonKnockRetransmit, verdict.ReasonKnockWrong:
		d.log.Debug("knock", "door", d.doorName(dec.Door), "source", p.Src.String(), "reason", dec.Reason.String(),
			"packet", verdict.Port{Proto: p.Proto, Num: p.DstPort}.String())
	}
}

func (d *daemon) sweep(now time.Time) {
	n := 0
	d.eng.Sweep(now, func(g verdict.Grant) {
		n++
		if d.m != nil {
			d.m.GrantExpired(g.Door)
		}
		d.log.Info("grant expired", "door", g.Door, "source", g.Source.String(),
			"opened", g.Opened.Format(time.RFC3339), "expired", g.Until.Format(time.RFC3339))
	})
	if n > 0 {
		d.markDirty()
	}
}

func (d *daemon) sweepLoop(ctx context.Context) {
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

// persistLoop writes the state file after every change of grants. It runs
// apart from the verdict path, which only marks the state dirty, so a slow
// disk never delays a verdict.
func (d *daemon) persistLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.dirty:
			d.save()
		}
	}
}

func (d *daemon) statePath() string {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	return d.pol.StateFile
}

func (d *daemon) save() {
	path := d.statePath()
	if path == "" {
		return
	}
	now := time.Now()
	if err := saveState(path, state{d.eng.Grants(now), d.eng.ReplayEntries(now)}, now); err != nil {
		d.log.Error("failed to save grants; they will not survive a restart", "err", err)
	}
}

// restore brings back the grants of an earlier run. A state file that
// cannot be read is set aside and the daemon starts without grants: a lost
// grant means a knock again, a wrongly restored one an open door.
func (d *daemon) restore(now time.Time) {
	path := d.pol.StateFile
	if path == "" {
		return
	}
	saved, err := loadState(path)
	if err != nil {
		attrs := []any{"err", err}
		if errors.Is(err, errCorruptState) {
			if to, serr := setAside(path, now); serr == nil {
				attrs = append(attrs, "moved_to", to)
			} else {
				attrs = append(attrs, "set_aside_err", serr)
			}
		}
		d.log.Error("state file unusable; starting with no grants", attrs...)
		return
	}
	restored, skipped := d.eng.Restore(saved.grants, now)
	replay, err := d.eng.RestoreReplay(saved.replay, now)
	if err != nil {
		d.log.Warn("not every used SPA packet fits the replay cache", "err", err, "restored", replay)
	}
	d.log.Info("grants restored", "state_file", path, "restored", restored, "skipped", skipped, "spa_replay", replay)
}

// reload re-reads the policy and swaps it in. An invalid policy is refused
// and the running one stays; the error carries the diagnostics.
func (d *daemon) reload(by string) (*reloadOutcome, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	now := time.Now()
	fail := func(err error) (*reloadOutcome, error) {
		d.log.Error("policy reload refused; the running policy stays", "by", by, "policy", d.path, "err", err.Error())
		if d.m != nil {
			d.m.Reloaded(false, now)
		}
		return nil, err
	}
	pol, err := rules.Load(d.path)
	if err != nil {
		return fail(err)
	}
	ended, err := d.eng.Reload(pol.Policy, now)
	if err != nil {
		return fail(fmt.Errorf("failed to compile policy %s: %w", d.path, err))
	}
	for what, changed := range map[string]bool{
		"queue":            pol.Queue != d.pol.Queue,
		"queues":           pol.Queues != d.pol.Queues,
		"metrics listen":   pol.MetricsListen != d.pol.MetricsListen,
		"control_socket":   pol.ControlSocket != d.pol.ControlSocket,
		"spa (copy range)": copyRange(pol.Policy) > copyRange(d.pol.Policy),
		"fail_open":        pol.FailOpen != d.pol.FailOpen,
		"accept_mark":      pol.AcceptMark != d.pol.AcceptMark || pol.AcceptMask != d.pol.AcceptMask,
	} {
		if changed {
			d.log.Warn("a changed setting takes effect at the next restart", "setting", what)
		}
	}
	// The queue and the sockets stay bound as they are; the state file
	// can follow at once.
	pol.Queue, pol.Queues, pol.MetricsListen, pol.ControlSocket = d.pol.Queue, d.pol.Queues, d.pol.MetricsListen, d.pol.ControlSocket
	pol.FailOpen, pol.AcceptMark, pol.AcceptMask = d.pol.FailOpen, d.pol.AcceptMark, d.pol.AcceptMask
	d.pol = pol
	out := &reloadOutcome{Doors: len(pol.Doors)}
	for _, g := range ended {
		d.log.Info("grant ended", "door", g.Door, "source", g.Source.String(), "by", "reload removed the door")
		out.Ended = append(out.Ended, g.Door+" "+g.Source.String())
	}
	if d.m != nil {
		d.m.SetDoors(doorNames(pol.Policy))
		d.m.Reloaded(true, now)
	}
	d.log.Info("policy reloaded", "by", by, "policy", d.path, "doors", len(pol.Doors), "grants_ended", len(ended))
	d.markDirty()
	return out, nil
}

func (d *daemon) revoke(door string, src netip.Addr) (bool, error) {
	live, err := d.eng.Revoke(door, src, time.Now())
	if err != nil {
		return false, err
	}
	if live {
		if d.m != nil {
			d.m.GrantRevoked(door)
		}
		d.log.Info("grant revoked", "door", door, "source", src.String(), "by", "operator")
		d.markDirty()
	}
	return live, nil
}

func (d *daemon) status() *statusReport {
	now := time.Now()
	st := d.eng.Stats()
	pol := d.eng.Policy()
	r := &statusReport{
		Version: version, Policy: d.path, Now: now,
		TrackedSources: st.Sources, MaxSources: st.MaxSources,
		Grants: st.Grants, MaxGrants: st.MaxGrants, Evictions: st.Evictions,
	}
	byDoor := map[string][]grantStatus{}
	for _, g := range d.eng.Grants(now) {
		byDoor[g.Door] = append(byDoor[g.Door], grantStatus{
			Source: g.Source, Opened: g.Opened.Round(0), Until: g.Until.Round(0), LeftSeconds: g.Until.Sub(now).Seconds(),
		})
	}
	for _, door := range pol.Doors {
		gs := byDoor[door.Name]
		sort.Slice(gs, func(i, j int) bool { return gs[i].Source.Less(gs[j].Source) })
		r.Doors = append(r.Doors, doorStatus{Name: door.Name, Grants: gs})
	}
	if len(d.qs) > 0 {
		r.Queue = queueSnapshot{Queue: d.pol.Queue, Queues: len(d.qs)}
		for _, q := range d.qs {
			qs := q.Stats()
			r.Queue.Packets += qs.Packets
			r.Queue.Accepted += qs.Accepted
			r.Queue.Dropped += qs.Dropped
			r.Queue.Malformed += qs.Malformed
			r.Queue.ENOBUFS += qs.ENOBUFS
		}
	}
	return r
}

// watchdog feeds systemd's watchdog while the verdict path is healthy: the
// queue reader still runs and the engine's lock can be taken (a wedged
// decision would hold it). If either fails, systemd restarts the daemon.
func (d *daemon) watchdog(ctx context.Context, runDone <-chan struct{}) {
	every := watchdogInterval() / 2
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-runDone:
			return
		case <-t.C:
			alive := make(chan struct{})
			go func() { d.eng.Stats(); close(alive) }()
			select {
			case <-alive:
				sdNotify("WATCHDOG=1")
			case <-time.After(every):
				d.log.Error("verdict path unresponsive; not feeding the watchdog")
			}
		}
	}
}
