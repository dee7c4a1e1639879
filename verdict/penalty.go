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
		if s.penalty.full() {
			s.evictPenalty(t)
		}
		p = s.penalty.insertH(sk.k, sk.h)
		*p = penalty{window: t}
	}
	if t-p.window > int64(pol.Within) {
		p.window, p.count = t, 0
	}
	p.count++
	if p.count >= uint32(pol.Failures) {
		p.until, p.count, p.window = t+int64(pol.Ban), 0, t
		d.Banned = true
		c.ring.push(sharedRaw{kind: SharedBan, c: c, k: sk.k, until: p.until})
	}
}

// evictPenalty makes room by forgetting, from a sample, a source that is
// not banned (the one that failed longest ago), else the ban nearest its
// end. A flood of failures from spoofed sources thus wears out records of
// its own kind before it can free a banned brute forcer.
func (s *shard) evictPenalty(t int64) {
	s.penalty.evict(s.rand(), func(p *penalty) uint64 {
		if p.until > t {
			return 1<<63 | since(p.until)>>1
		}
		return since(p.window) >> 1
	})
	s.evictions++
}
