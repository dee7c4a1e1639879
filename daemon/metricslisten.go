package daemon

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/knockgate/knockgate/metrics"
)

// A metrics endpoint that cannot listen (its port taken, most often by a
// second instance or another exporter) must never stop the gate: under
// fail-closed rules a gate that exits drops every new inbound connection.
// The daemon logs the error, reports itself degraded (status, the control
// socket) and retries the listener with backoff until it binds.

// Backoff between attempts to listen for metrics.
const (
	metricsRetryFirst = time.Second
	metricsRetryMax   = time.Minute
)

// serveMetrics serves h on addr, now or, if the listen fails, later.
func (d *Daemon) serveMetrics(ctx context.Context, addr string, h http.Handler) {
	err := metrics.Serve(ctx, addr, h, d.log)
	if err == nil {
		return
	}
	d.setDegraded(err.Error())
	d.log.Error("metrics endpoint unavailable; the gate keeps deciding packets and retries the listener", "addr", addr, "err", err)
	go func() {
		wait := d.metricsRetry
		if wait <= 0 {
			wait = metricsRetryFirst
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			if err := metrics.Serve(ctx, addr, h, d.log); err != nil {
				d.setDegraded(err.Error())
				wait = min(2*wait, metricsRetryMax)
				d.log.Debug("metrics listener retry failed", "addr", addr, "err", err, "next", wait.String())
				continue
			}
			d.setDegraded("")
			d.log.Info("metrics endpoint available again", "addr", addr)
			return
		}
	}()
}

// setDegraded records why the daemon is degraded; "" means it is not.
func (d *Daemon) setDegraded(why string) {
	if why == "" {
		d.metricsErr.Store(nil)
		return
	}
	d.metricsErr.Store(&why)
}

// degraded says what works less than it should, for status; "" when
// all is well.
func (d *Daemon) degraded() string {
	var why []string
	if e := d.metricsErr.Load(); e != nil {
		why = append(why, "the metrics endpoint is not listening: "+*e)
	}
	if e := d.saveFailing(); e != "" {
		why = append(why, "the state file cannot be saved: "+e)
	}
	return strings.Join(why, "; ")
}
