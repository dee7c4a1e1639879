package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/knockgate/knockgate/daemon"
)

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
	d, err := daemon.New(daemon.Config{Policy: pol, Path: *config, Version: version, Logger: logger})
	if err != nil {
		return err
	}
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		runtime.GOMAXPROCS(procsFor(pol.Queues, runtime.GOMAXPROCS(0)))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				d.Reload("SIGHUP")
			}
		}
	}()
	return d.Run(ctx)
}

// procsFor is the GOMAXPROCS to run queues readers with, given the current
// one. Each reader spends most of its time in the kernel, and a reader back
// from a long system call (a verdict write for 64 packets runs their
// reinjection, hundreds of µs) needs a free P, Go's scheduler slot, before
// it reads again. With no more Ps than cores the runtime may have handed
// the reader's P elsewhere, and packets wait while a core idles (measured
// in BENCHMARKS.md, "Two queues"). A P for every reader and two for the
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
