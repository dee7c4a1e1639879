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
	// penaltyFullBefore does the same for shard.penaltyFull.
	penaltyFullBefore uint64
	// everProtected is every port a policy since NewEngine protected, so
	// a reload can keep them closed (hold). Guarded by ctl.
	everProtected portSet
	// spare is the lookup tables of the policy a reload retired, for the
	// next reload to compile into. Guarded by ctl.
	spare *portTables
	// shared collects what a cluster shares (shared.go); off until
	// ShareEvents.
	shared sharedRing
}

// NewEngine compiles p into lookup tables. now anchors the engine's clock:
// all later times are measured from it, with the monotonic reading when
// now has one, so a wall-clock step cannot stretch or cut a grant.
func NewEngine(p Policy, now time.Time) (*Engine, error) {
	c, err := compile(p, nil)
	if err != nil {
		return nil, err
	}
	e := &Engine{epoch: now}
	c.ring = &e.shared
	e.hold(c)
	e.gen.Store(newGeneration(c, nil))
	return e, nil
}

// Policy returns the policy the engine enforces.
func (e *Engine) Policy() Policy { return e.gen.Load().c.policy }
