package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves /metrics from the registry, /-/healthy (200 while the
// process answers at all) and /-/ready (200 when ready reports true, 503
// otherwise; a nil ready is always ready). A ready daemon that is degraded
// (Degraded) still answers 200, since it decides packets as it should, but
// says "degraded" and why, for a probe that reads the body.
func (m *Metrics) Handler(ready func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A collector that fails leaves out its metrics, not everyone's.
		ErrorHandling: promhttp.ContinueOnError,
		// A scrape reads the engine's tables under the lock the packet
		// path takes; a burst of scrapes must not queue up behind it.
		MaxRequestsInFlight: 2,
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /-/ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ready != nil && !ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "not ready\n")
			return
		}
		if why := m.Degraded(); why != "" {
			io.WriteString(w, "degraded: "+why+"\n")
			return
		}
		io.WriteString(w, "ready\n")
	})
	return mux
}

// shutdownGrace is how long Serve waits for requests in flight once ctx is
// done before it closes their connections.
const shutdownGrace = 5 * time.Second

// Serve listens on addr at once and returns the listen error, if any, so
// the daemon can refuse a bad address before it starts. It then serves h in
// the background until ctx is done, and shuts the server down gracefully.
// A nil log discards the server's messages.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("failed to listen for metrics on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler: h,
		// Bounds how long a client may dribble its headers in: without
		// it, a few slow clients could hold connections open forever.
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("serving metrics", "addr", ln.Addr().String())
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("metrics server did not shut down in time; closing its connections", "err", err)
			srv.Close()
		}
	}()
	return nil
}
