package daemon

import (
	"context"

	"github.com/knockgate/knockgate/gate"
)

// Queue is what the daemon uses of one NFQUEUE queue: a *gate.Queue in
// production, a fake in tests, which is what lets reload, status, revoke,
// restore and state saving be tested without root.
type Queue interface {
	// Run serves packets, asking d for each one's verdict, until ctx is
	// done (nil) or the queue fails (an error).
	Run(ctx context.Context, d gate.Decider) error
	// Ready is closed once the queue is bound and packets flow.
	Ready() <-chan struct{}
	// Stats counts what the queue has seen.
	Stats() gate.Stats
	Close() error
}

// OpenFunc opens one queue; cfg.Observe must be called with every
// decision, after its verdict.
type OpenFunc func(cfg gate.Config) (Queue, error)

// openGate opens a kernel queue.
func openGate(cfg gate.Config) (Queue, error) {
	q, err := gate.Open(cfg)
	if err != nil {
		return nil, err
	}
	return q, nil
}
