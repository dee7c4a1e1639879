package verdict

import (
	"encoding/binary"
	"net/netip"
)

// key identifies an entry: a source address, and for grants the door.
// Addresses are stored in their 16-byte form (IPv4 as ::ffff:a.b.c.d) so one
// table serves both families without allocating.
type key struct {
	hi, lo uint64
	door   uint32
}

func keyOf(a netip.Addr, door int) key {
	b := a.As16()
	return key{
		hi:   binary.BigEndian.Uint64(b[0:8]),
		lo:   binary.BigEndian.Uint64(b[8:16]),
		door: uint32(door),
	}
}

func (k key) addr() netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], k.hi)
	binary.BigEndian.PutUint64(b[8:16], k.lo)
	return netip.AddrFrom16(b).Unmap()
}

// fmix64 is MurmurHash3's finaliser. Chained over a secret per-engine seed it
// spreads spoofed addresses evenly, so an attacker who cannot see the seed
// cannot aim a flood at one probe chain (or one shard).
func fmix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// hash is the hash of the source address, xored with a mix of the door.
// A source's key (door 0) thus hashes to the source hash itself, and the
// engine hashes a packet's source once: the top bits pick its shard, and
// the same hash finds it in the shard's tables, which share the seed;
// a grant's hash is that hash xored with the door's mix, which the
// compiled policy keeps ready (opener.mix).
func (k key) hash(seed uint64) uint64 {
	return fmix64(fmix64(seed^k.hi)^k.lo) ^ doorMix(k.door)
}

// doorMix spreads a door index over 64 bits; doorMix(0) is 0.
func doorMix(door uint32) uint64 { return fmix64(uint64(door) * 0x9e3779b97f4a7c15) }

type slot[V any] struct {
	k    key
	used bool
	v    V
}

// table is an open-addressing hash table with linear probing and
// backward-shift deletion (no tombstones), allocated once at its final size.
// Go maps could do the lookups, but they grow and rehash under churn, which
// would put allocations and latency spikes on the per-packet path exactly
// when a flood churns the table; this one never allocates after newTable.
// It holds at most max entries in 2*max (rounded up to a power of two)
// slots, so probe chains stay short even when full.
type table[V any] struct {
	slots []slot[V]
	mask  uint64
	n     int
	max   int
	seed  uint64
}

func newTable[V any](max int, seed uint64) table[V] {
	if max < 1 {
		max = 1
	}
	size := 8
	for size < 2*max {
		size <<= 1
	}
	return table[V]{slots: make([]slot[V], size), mask: uint64(size - 1), max: max, seed: seed}
}

func (t *table[V]) full() bool { return t.n >= t.max }

// find returns the slot index holding k, or -1.
func (t *table[V]) find(k key) int { return t.findH(k, k.hash(t.seed)) }

// findH is find for a key whose hash h (k.hash(t.seed)) is known.
func (t *table[V]) findH(k key, h uint64) int {
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if !s.used {
			return -1
		}
		if s.k == k {
			return int(i)
		}
	}
}

func (t *table[V]) get(k key) *V { return t.getH(k, k.hash(t.seed)) }

func (t *table[V]) getH(k key, h uint64) *V {
	if i := t.findH(k, h); i >= 0 {
		return &t.slots[i].v
	}
	return nil
}

// insert adds k, which must be absent, and returns its zeroed value. The
// caller makes room first when the table is full.
func (t *table[V]) insert(k key) *V { return t.insertH(k, k.hash(t.seed)) }

// insertH is insert for a key whose hash h is known.
func (t *table[V]) insertH(k key, h uint64) *V {
	i := h & t.mask
	for t.slots[i].used {
		i = (i + 1) & t.mask
	}
	var zero V
	t.slots[i] = slot[V]{k: k, used: true, v: zero}
	t.n++
	return &t.slots[i].v
}

func (t *table[V]) delete(k key) bool {
	i := t.find(k)
	if i < 0 {
		return false
	}
	t.deleteAt(i)
	return true
}

// deleteAt empties slot i and shifts later entries of the probe chain back,
// so lookups never meet a hole in the middle of their chain.
func (t *table[V]) deleteAt(at int) {
	i := uint64(at)
	t.n--
	for {
		t.slots[i].used = false
		j := i
		for {
			j = (j + 1) & t.mask
			if !t.slots[j].used {
				return
			}
			home := t.slots[j].k.hash(t.seed) & t.mask
			// The entry at j may move to i only if its home is not in the
			// cyclic range (i, j]; otherwise moving it would put it before
			// its own home.
			if i <= j {
				if i < home && home <= j {
					continue
				}
			} else if i < home || home <= j {
				continue
			}
			t.slots[i] = t.slots[j]
			i = j
			break
		}
	}
}

// sweep calls drop for every entry and deletes those it returns true for.
func (t *table[V]) sweep(drop func(k key, v *V) bool) {
	for i := 0; i < len(t.slots); {
		s := &t.slots[i]
		if s.used && drop(s.k, &s.v) {
			// deleteAt may shift a later entry into i: look at i again.
			t.deleteAt(i)
			continue
		}
		i++
	}
}

// evictSample is how many occupied slots an eviction looks at. At most half
// the slots are ever in use, so this scans about twice as many slots.
const evictSample = 8

// evict makes room in a full table: from evictSample occupied slots,
// scanned from a random start (so a flood cannot steer which entries are
// looked at), it deletes the one with the lowest keep score. Looking at a
// sample instead of the whole table keeps an eviction O(1) per packet.
func (t *table[V]) evict(start uint64, keep func(*V) uint64) {
	best, _ := t.sample(start, keep)
	t.deleteAt(best)
}

// sample is evict's choice without the deletion: the slot, among
// evictSample occupied ones scanned from start, with the lowest keep
// score, and that score. The table must not be empty.
func (t *table[V]) sample(start uint64, keep func(*V) uint64) (best int, bestKeep uint64) {
	best = -1
	i := start & t.mask
	for seen := 0; seen < evictSample; i = (i + 1) & t.mask {
		if !t.slots[i].used {
			continue
		}
		seen++
		if k := keep(&t.slots[i].v); best < 0 || k < bestKeep {
			best, bestKeep = int(i), k
		}
	}
	return best, bestKeep
}

// since turns an engine time into a keep score that orders as the time
// does; times before the epoch (none in practice) all score 0.
func since(t int64) uint64 { return uint64(max(t, 0)) }
