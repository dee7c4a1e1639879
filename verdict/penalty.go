package verdict

// penalty is a source's record of failures, and its ban.
type penalty struct {
	count  uint32
	window int64 // start of the current counting window
	until  int64 // end of the ban, if any
}

// banned reports whether the source is in the penalty box.
func (s *shard) banned(c *compiled, sk source, t int64) bool {
	if c.policy.Penalty.Failures <= 0 {
		return false
	}
	p := s.penalty.getH(sk.k, sk.h)
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

// penalize counts a failure of the source and bans it when it reaches
// the limit. Decide calls it last, once the packet's reason is known.
func (s *shard) penalize(c *compiled, d *Decision, sk source, t int64) {
	pol := &c.policy.Penalty
	if pol.Failures <= 0 || !failure(d.Reason) {
		return
	}
	p := s.penalty.getH(sk.k, sk.h)
	if p == nil {
		if s.penalty.full() && !s.evictPenalty(t) {
			s.penaltyFull++
			return
		}
		p = s.penalty.insertH(sk.k, sk.h)
		*p = penalty{window: t}
	}
	if t-p.window > int64(pol.Within) {
		p.window, p.count = t, 0
	}
	p.count++
	if p.count >= uint32(pol.Failures) {
		p.until, p.count, p.window = addSat(t, int64(pol.Ban)), 0, t
		d.Banned = true
		c.ring.push(sharedRaw{kind: SharedBan, c: c, k: sk.k, until: p.until})
	}
}

// evictPenalty makes room by forgetting, from a sample, the source that
// is not banned and failed longest ago. It never ends a live ban: when
// the sample holds nothing but bans it reports false, and the failing
// source goes untracked (penalize counts it in penaltyFull). A flood of
// failures from spoofed sources thus wears out records of its own kind,
// and once the box is full of bans it can buy none out: the brute forcer
// stays banned to the end. The price is that a new source failing while
// the box is full is not tracked until a ban ends; the box's max_sources
// bounds how many sources a flood must keep banned to get there.
func (s *shard) evictPenalty(t int64) bool {
	const banned = 1 << 63
	i, keep := s.penalty.sample(s.rand(), func(p *penalty) uint64 {
		if p.until > t {
			return banned
		}
		return since(p.window) >> 1
	})
	if keep == banned {
		return false
	}
	s.penalty.deleteAt(i)
	s.evictions++
	return true
}
