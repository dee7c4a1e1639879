package main

import (
	"context"
	"io"
	"log/slog"
)

// journalHandler writes log lines for systemd's journal: logfmt text like
// the text format, without a timestamp (the journal stamps each line
// itself), prefixed with the level as a syslog priority ("<4>" for warn),
// which journald reads into the line's PRIORITY and strips.
type journalHandler struct {
	// by level: debug, info, warn, error; each writes through its prefix.
	hs [4]slog.Handler
}

func newJournalHandler(w io.Writer, level slog.Level) *journalHandler {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}
	var h journalHandler
	for i, prio := range []string{"<7>", "<6>", "<4>", "<3>"} {
		h.hs[i] = slog.NewTextHandler(prefixWriter{w, []byte(prio)}, opts)
	}
	return &h
}

func (h *journalHandler) pick(l slog.Level) slog.Handler {
	switch {
	case l >= slog.LevelError:
		return h.hs[3]
	case l >= slog.LevelWarn:
		return h.hs[2]
	case l >= slog.LevelInfo:
		return h.hs[1]
	}
	return h.hs[0]
}

func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.hs[0].Enabled(ctx, l)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.pick(r.Level).Handle(ctx, r)
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var n journalHandler
	for i := range h.hs {
		n.hs[i] = h.hs[i].WithAttrs(as)
	}
	return &n
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	var n journalHandler
	for i := range h.hs {
		n.hs[i] = h.hs[i].WithGroup(name)
	}
	return &n
}

// prefixWriter writes each line a slog handler hands it (one Write per
// record) behind a fixed prefix, in one Write so lines never interleave.
type prefixWriter struct {
	w      io.Writer
	prefix []byte
}

func (p prefixWriter) Write(b []byte) (int, error) {
	line := make([]byte, 0, len(p.prefix)+len(b))
	line = append(append(line, p.prefix...), b...)
	if _, err := p.w.Write(line); err != nil {
		return 0, err
	}
	return len(b), nil
}
