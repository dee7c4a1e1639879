package verdict

import (
	"math/bits"
	"math/rand/v2"
	"sync"
)

// Sharding. The gate reads several NFQUEUE queues at once, one goroutine
// each, and every one of them calls Decide. One lock around all the
// tables would make those goroutines queue behind each other on every
// packet, so the per-source state is split into shards by a seeded hash
// of the source address: a source's knock progress, grants, SPA rate
// limit and penalty record all live in one shard, and Decide takes that
// shard's lock only. Sources in other shards go on in parallel.
//
// What is not per source has its own, rarer synchronisation: the compiled
// policy is immutable and read through an atomic pointer; the SPA replay
// cache is keyed by packet digest (a packet replayed from another source
// must be caught), so it is sharded by digest with leaf locks, taken only
// for packets that pass the SPA prefilter; the TOTP doors' derived
// sequences and "used in this step" marks have a lock per door, taken
// once a step and when a TOTP sequence completes (see totpLive).
const (
	// maxShards bounds the shard count. Two queue readers on two cores
	// meet in the same shard 1/32 of the time; more shards would only add
	// per-shard overhead.
	maxShards = 32
	// minShardCap is the smallest share of a table a shard gets. Eviction
	// is per shard: a full shard evicts even while another has room. A
	// flood's packets are split among the shards as the room is, so a
	// knocker holds its place as long, on average, as in one big table; a
	// share of at least 64 keeps the shards' fill close to even and the
	// eviction sample (evictSample) a small part of a shard. Small
	// policies (a home gateway, the caps of tests) thus get one shard,
	// and nothing is lost to rounding.
	minShardCap = 64
)

// shard holds the state of the sources whose hash falls in it. Every
// field is guarded by mu.
type shard struct {
	mu sync.Mutex
	// retired is set, under mu, once a reload has moved the shard's
	// entries into a new generation: a Decide that loaded the old
	// generation and then got this lock must start over with the new one,
	// or its changes would be lost (and its door indices would be the old
	// policy's).
	retired   bool
	progress  table[progress]
	grants    table[grant]
	rate      table[int64] // SPA senders' theoretical arrival time, see spaAllow
	penalty   table[penalty]
	rng       uint64
	evictions uint64
	// penaltyFull counts the failures of sources the penalty box did not
	// track, its share of the table being full of live bans.
	penaltyFull uint64
	// The padding keeps the lock and counters of neighbouring shards,
	// written on every packet from different cores, off one cache line.
	_ [64]byte
}

// replayShard is a share of the SPA replay cache, keyed by the first 20
// bytes of a used packet's SHA-256. Its lock is a leaf: taken while a
// source's shard is held, never the other way round.
type replayShard struct {
	mu        sync.Mutex
	t         table[int64]
	evictions uint64
	_         [64]byte
}

// generation is a compiled policy and the state kept under it. Both are
// swapped together by Reload, so a packet never meets door or sequence
// indices of one policy in tables remapped for another.
type generation struct {
	c      *compiled
	seed   uint64 // hashes sources for their shard and its tables; secret, so a flood cannot aim at one
	shift  uint   // 64 - log2(len(shards)): the top bits of the hash pick the shard
	shards []shard
	replay []replayShard
	caps   tableCaps
	// taken says which tables newGeneration left for Reload to take over
	// from the generation before: those whose caps did not change.
	taken struct{ progress, grants, rate, penalty, replay bool }
}

// tableCaps are the caps of a generation's tables, summed over its shards.
type tableCaps struct{ progress, grants, rate, penalty, replay int }

// shardCount picks the number of shards for a policy: as many as fit
// with every shard holding at least minShardCap of each per-source table,
// up to maxShards, a power of two.
func shardCount(p *Policy, spaDoors bool) int {
	least := min(p.MaxSources, p.MaxGrants)
	if p.Penalty.Failures > 0 && p.Penalty.MaxSources > 0 {
		least = min(least, p.Penalty.MaxSources)
	}
	if spaDoors {
		least = min(least, p.MaxReplay)
	}
	n := 1
	for n < maxShards && least/(2*n) >= minShardCap {
		n *= 2
	}
	return n
}

// share is shard i's part of a cap of total over n shards. The parts add
// up to total exactly, so a policy's caps stay what it says (and what
// the metrics report) however many shards there are.
func share(total, n, i int) int {
	part := total / n
	if i < total%n {
		part++
	}
	return part
}

// newGeneration allocates the shards' tables for c, once: they never grow.
// With prev, the generation a reload replaces, and as many shards as it
// has, it keeps prev's seed, so every entry would hash to the same shard
// and slot, and leaves out each table whose cap is prev's: Reload takes
// that one over (taken).
func newGeneration(c *compiled, prev *generation) *generation {
	p := &c.policy
	spaDoors := len(c.spaLists) > 0
	n := shardCount(p, spaDoors)
	// A policy without SPA, or with the penalty box off, keeps those
	// tables tiny.
	caps := tableCaps{progress: p.MaxSources, grants: p.MaxGrants, rate: 1, penalty: 1, replay: 1}
	if spaDoors {
		caps.replay, caps.rate = p.MaxReplay, min(p.MaxReplay, p.MaxSources)
	}
	if p.Penalty.Failures > 0 && p.Penalty.MaxSources > 0 {
		caps.penalty = p.Penalty.MaxSources
	}
	g := &generation{
		c:      c,
		seed:   rand.Uint64(),
		shift:  uint(64 - bits.TrailingZeros(uint(n))),
		shards: make([]shard, n),
		replay: make([]replayShard, n),
		caps:   caps,
	}
	if prev != nil && len(prev.shards) == n {
		g.seed = prev.seed
		g.taken.progress = caps.progress == prev.caps.progress
		g.taken.grants = caps.grants == prev.caps.grants
		g.taken.rate = caps.rate == prev.caps.rate
		g.taken.penalty = caps.penalty == prev.caps.penalty
		g.taken.replay = caps.replay == prev.caps.replay
	}
	for i := range g.shards {
		// The per-source tables share the generation's seed, so one hash
		// of a packet's source serves for its shard and all of them.
		s := &g.shards[i]
		if !g.taken.progress {
			s.progress = newTable[progress](share(caps.progress, n, i), g.seed)
		}
		if !g.taken.grants {
			s.grants = newTable[grant](share(caps.grants, n, i), g.seed)
		}
		if !g.taken.rate {
			s.rate = newTable[int64](share(caps.rate, n, i), g.seed)
		}
		if !g.taken.penalty {
			s.penalty = newTable[penalty](share(caps.penalty, n, i), g.seed)
		}
		s.rng = rand.Uint64() | 1
		if !g.taken.replay {
			g.replay[i].t = newTable[int64](share(caps.replay, n, i), rand.Uint64())
		}
	}
	return g
}

// shardOf is the shard of the source k (whose door must be 0).
func (g *generation) shardOf(k key) *shard {
	return &g.shards[k.hash(g.seed)>>g.shift]
}

// shardAt is the shard of a source whose hash is h.
func (g *generation) shardAt(h uint64) *shard { return &g.shards[h>>g.shift] }

func (g *generation) replayOf(k key) *replayShard {
	return &g.replay[k.hash(g.seed)>>g.shift]
}

// source is the key of k's source alone, the one its shard is picked by.
func (k key) source() key {
	k.door = 0
	return k
}

// lockSource locks the shard of the source k in the current generation,
// and returns k's hash there. It never waits for a reload: if one retired
// the shard in between, it looks again, and the new generation is already
// in place by then.
func (e *Engine) lockSource(k key) (*generation, *shard, uint64) {
	for {
		g := e.gen.Load()
		h := k.hash(g.seed)
		s := g.shardAt(h)
		s.mu.Lock()
		if !s.retired {
			return g, s, h
		}
		s.mu.Unlock()
	}
}

// farGrant is an SPA grant for an address other than the packet's source
// (a door with allow_any_source) whose state lives in another shard. It
// is made after the source's shard is unlocked, since holding two shard
// locks at once could deadlock with a Decide doing the same the other way.
type farGrant struct {
	k     key // the address and door
	dur   int64
	ports uint64
}

// grantFar makes a farGrant decided under generation g. Should a reload
// have come in between, the door is found again by name, and the grant
// covers what the door still opens of what it asked for.
func (e *Engine) grantFar(g *generation, f *farGrant, t int64) {
	cur, s, _ := e.lockSource(f.k.source())
	defer s.mu.Unlock()
	k, ports := f.k, f.ports
	if cur != g {
		from := &g.c.policy.Doors[k.door]
		di, ok := cur.c.doorIndex[from.Name]
		if !ok {
			return
		}
		if ports = remapPorts(from, &cur.c.policy.Doors[di], ports); ports == 0 {
			return
		}
		k.door = uint32(di)
	}
	s.grant(cur.c, k, t, f.dur, ports)
}
