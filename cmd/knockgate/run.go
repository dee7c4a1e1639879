package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/knockgate/knockgate/gate"
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
			"expiry. Needs CAP_NET_ADMIN. Stops on SIGINT or SIGTERM.", stderr)
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
	d := &daemon{log: logger, eng: eng}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	q, err := gate.Open(gate.Config{Queue: pol.Queue, Logger: logger, Observe: d.observe})
	if err != nil {
		return err
	}
	defer q.Close()

	go d.sweepLoop(ctx)
	go func() {
		select {
		case <-q.Ready():
			logger.Info("knockgate ready", "queue", pol.Queue)
		case <-ctx.Done():
		}
	}()
	logger.Info("knockgate starting", "version", version, "policy", *config, "queue", pol.Queue,
		"doors", len(pol.Doors), "unprotected", pol.Unprotected.String())
	if err := q.Run(ctx, eng); err != nil {
		return err
	}
	st := q.Stats()
	logger.Info("knockgate stopped", "packets", st.Packets, "malformed", st.Malformed)
	return nil
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

// daemon turns the engine's decisions into log lines. It observes; it never
// changes a verdict.
type daemon struct {
	log *slog.Logger
	eng *verdict.Engine
}

func (d *daemon) doorName(i int) string {
	doors := d.eng.Policy().Doors
	if i < 0 || i >= len(doors) {
		return ""
	}
	return doors[i].Name
}

// observe runs for every packet on the verdict path, so it does nothing
// unless the decision changed a grant or debug logging is on.
func (d *daemon) observe(p verdict.Packet, dec verdict.Decision) {
	switch dec.Reason {
	case verdict.ReasonOpened:
		door := d.eng.Policy().Doors[dec.Door]
		d.log.Info("grant opened", "door", door.Name, "source", p.Src.String(),
			"open_for", door.OpenFor.String(), "ports", fmt.Sprint(door.Open))
		return
	case verdict.ReasonClosed:
		d.log.Info("grant revoked", "door", d.doorName(dec.Door), "source", p.Src.String(), "by", "close_sequence")
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
	case verdict.ReasonKnock, verdict.ReasonNotAllowed, verdict.ReasonKnockRetransmit, verdict.ReasonKnockWrong:
		d.log.Debug("knock", "door", d.doorName(dec.Door), "source", p.Src.String(), "reason", dec.Reason.String(),
			"packet", verdict.Port{Proto: p.Proto, Num: p.DstPort}.String())
	}
}

func (d *daemon) sweep(now time.Time) {
	d.eng.Sweep(now, func(g verdict.Grant) {
		d.log.Info("grant expired", "door", g.Door, "source", g.Source.String(),
			"opened", g.Opened.Format(time.RFC3339), "expired", g.Until.Format(time.RFC3339))
	})
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
