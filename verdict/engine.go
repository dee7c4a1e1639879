package verdict

import (
	"sync"
	"sync/atomic"
	"time"
)

// Engine decides the verdict for each packet and keeps the knock progress
// and grants of every source. It is safe for concurrent use: the state of
// each source lives in one of several shards, each with its own lock, so
// Decide calls for sources in different shards (several queue readers)
// never wait for each other. See generation.
type Engine struct {
	epoch time.Time
	// gen is the policy in force and the state kept under it. Decide
	// loads it without a lock; Reload swaps it.
	gen atomic.Pointer[generation]
	// ctl serialises the calls that walk every shard or swap the
	// generation (Reload, Sweep, Grants, Stats, Restore...), so that
	// while one of them runs the generation stays put. Decide never takes
	// it.
	ctl sync.Mutex
	// evictedBefore carries the evictions of generations a reload
	// retired, so the counter never goes back. Guarded by ctl.
	evictedBefore uint64
	// shared collects what a cluster shares (shared.go); off until
	// ShareEvents.
	shared sharedRing
}

// NewEngine compiles p into lookup tables. now anchors the engine's clock:
// all later times are measured from it, with the monotonic reading when
// now has one, so a wall-clock step cannot stretch or cut a grant.
func NewEngine(p Policy, now time.Time) (*Engine, error) {
	c, err := compile(p)
	if err != nil {
		return nil, err
	}
	e := &Engine{epoch: now}
	c.ring = &e.shared
	e.gen.Store(newGeneration(c))
	return e, nil
}

// Policy returns the policy the engine enforces.
func (e *Engine) Policy() Policy { return e.gen.Load().c.policy }

func (e *Engine) nanos(now time.Time) int64 { return int64(now.Sub(e.epoch)) }
