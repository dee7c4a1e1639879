package verdict

import (
	"math/rand/v2"
	"net/netip"
)

// penalty is a source's record of failures, and its ban.
type penalty struct {
	count  uint32
	window int64 // start of the current counting window
	until  int64 // end of the ban, if any
}

func newPenaltyTable(p Penalty) table[penalty] {
	n := p.MaxSources
	if p.Failures <= 0 || n <= 0 {
		n = 1
	}
	return newTable[penalty](n, rand.Uint64())
}

func (e *Engine) banned(src netip.Addr, t int64) bool {
	if e.c.policy.Penalty.Failures <= 0 {
		return false
	}
	p := e.penalty.get(keyOf(src, 0))
	return p != nil && p.until > t
}

// failure reports whether a knock or SPA packet's outcome counts against
// its source. Resets by ordinary traffic, timeouts and retransmits do not:
// only what a guesser or a replayer does.
func failure(r Reason) bool {
	switch r {
	case ReasonKnockWrong, ReasonNotAllowed, ReasonKnockReplay,
		ReasonSPAInvalid, ReasonSPAReplay, ReasonSPAStale, ReasonSPASource, ReasonSPAPorts, ReasonSPACommand:
		return true
	}
	return false
}

// penalize counts a failure of src and bans it when it reaches the limit.
// It runs deferred from Decide, once the packet's reason is known.
func (e *Engine) penalize(d *Decision, src netip.Addr, t int64) {
	pol := &e.c.policy.Penalty
	if pol.Failures <= 0 || !failure(d.Reason) {
		return
	}
	k := keyOf(src, 0)
	p := e.penalty.get(k)
	if p == nil {
		if e.penalty.full() {
			e.evictPenalty(t)
		}
		p = e.penalty.insert(k)
		*p = penalty{window: t}
	}
	if t-p.window > int64(pol.Within) {
		p.window, p.count = t, 0
	}
	p.count++
	if p.count >= uint32(pol.Failures) {
		p.until, p.count, p.window = t+int64(pol.Ban), 0, t
		d.Banned = true
	}
}

// evictPenalty makes room by forgetting, from a sample, a source that is
// not banned (the one that failed longest ago), else the ban nearest its
// end. A flood of failures from spoofed sources thus wears out records of
// its own kind before it can free a banned brute forcer.
func (e *Engine) evictPenalty(t int64) {
	e.penalty.evict(e.rand(), func(p *penalty) uint64 {
		if p.until > t {
			return 1<<63 | since(p.until)>>1
		}
		return since(p.window) >> 1
	})
	e.evictions++
}

func (e *Engine) sweepPenalty(t int64) {
	within := int64(e.c.policy.Penalty.Within)
	e.penalty.sweep(func(_ key, p *penalty) bool { return p.until <= t && t-p.window > within })
}
