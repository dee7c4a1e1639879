package verdict

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/knockgate/knockgate/verdict/spa"
)

// The per-source SPA rate limit, a GCRA: one packet per spaInterval on
// average, bursts of spaBurst. A person runs a client a few times at most;
// anything faster is a flood, and is dropped before any cryptography.
const (
	spaInterval = 250 * time.Millisecond
	spaBurst    = 4
)

func (c *compiled) compileSPA(di int, d Door) error {
	if d.SPA == nil {
		return nil
	}
	s := d.SPA
	if s.Port.Proto != UDP || s.Port.Num == 0 {
		return fmt.Errorf("door %q: SPA port %v is not a UDP port", d.Name, s.Port)
	}
	if s.MaxAge <= 0 {
		return fmt.Errorf("door %q: SPA max_age must be above zero", d.Name)
	}
	if s.Keys.AllowNoHMAC || len(s.Keys.HMAC) == 0 {
		return fmt.Errorf("door %q: SPA needs an HMAC key", d.Name)
	}
	if err := s.Keys.Validate(); err != nil {
		return fmt.Errorf("door %q: %w", d.Name, err)
	}
	pi := protoIndex(UDP)
	switch c.class[pi][s.Port.Num] {
	case classKnock:
		return fmt.Errorf("door %q: %v is both a knock and an SPA port", d.Name, s.Port)
	case classProtected:
		return fmt.Errorf("door %q: %v is both a protected and an SPA port", d.Name, s.Port)
	}
	c.class[pi][s.Port.Num] = classSPA
	li := c.spaAt[pi][s.Port.Num]
	if li == 0 {
		c.spaLists = append(c.spaLists, nil)
		li = int32(len(c.spaLists) - 1)
		c.spaAt[pi][s.Port.Num] = li
	}
	c.spaLists[li] = append(c.spaLists[li], di)
	return nil
}

// replayKey is the replay cache's key for a packet: the first 20 bytes of
// its SHA-256, the last four of them in the door field.
func replayKey(sum []byte) key {
	return key{
		hi:   binary.BigEndian.Uint64(sum[0:8]),
		lo:   binary.BigEndian.Uint64(sum[8:16]),
		door: binary.BigEndian.Uint32(sum[16:20]),
	}
}

// digest is the inverse of replayKey: the 20 bytes of SHA-256 k holds.
func (k key) digest() (d [20]byte) {
	binary.BigEndian.PutUint64(d[0:8], k.hi)
	binary.BigEndian.PutUint64(d[8:16], k.lo)
	binary.BigEndian.PutUint32(d[16:20], k.door)
	return d
}

// spaAllow applies the per-source rate limit.
func (s *shard) spaAllow(sk source, t int64) bool {
	const interval, tolerance = int64(spaInterval), int64(spaInterval) * (spaBurst - 1)
	tb := &s.rate
	tat := tb.getH(sk.k, sk.h)
	if tat == nil {
		if tb.full() {
			// Forget the sender whose allowance is fullest; a flood of
			// spoofed sources only ever evicts other senders' rate
			// entries, never a grant.
			tb.evict(s.rand(), func(tat *int64) uint64 { return since(*tat) })
		}
		tat = tb.insertH(sk.k, sk.h)
		*tat = t
	}
	if *tat-t > tolerance {
		return false
	}
	*tat = max(*tat, t) + interval
	return true
}

// decideSPA checks one packet to an SPA port, in the order that costs an
// attacker the most and us the least: rate limit, shape, replay, HMAC, and
// only then decryption and the policy.
//
// It runs under the source's shard lock; the replay cache, shared by all
// sources, is locked by digest only around its lookups.
func (s *shard) decideSPA(g *generation, d *Decision, src netip.Addr, sk source, p *Packet, pi int, now time.Time, t int64, far *farGrant) {
	c := g.c
	doors := c.spaLists[c.spaAt[pi][p.DstPort]]
	d.Door = doors[0]
	if !s.spaAllow(sk, t) {
		d.Reason = ReasonSPARateLimited
		return
	}
	payload := p.Payload
	if spa.Prefilter(payload) != nil {
		d.Reason = ReasonSPAInvalid
		return
	}
	sum := spa.ReplayKey(payload)
	rk := replayKey(sum[:])
	rs := g.replayOf(rk)
	if rs.used(rk, t) {
		d.Reason = ReasonSPAReplay
		return
	}
	door := NoDoor
	for _, di := range doors {
		ds := c.policy.Doors[di].SPA
		if c.allowed(di, src) && spa.VerifyHMAC(payload, ds.Keys.HMAC, ds.Keys.HMACDigest) {
			door = di
			break
		}
	}
	if door == NoDoor {
		d.Reason = ReasonSPAInvalid
		return
	}
	d.Door = door
	dr := &c.policy.Doors[door]
	ds := dr.SPA
	msg, err := spa.Decode(payload, ds.Keys)
	if err != nil {
		d.Reason = ReasonSPAInvalid
		return
	}
	// The packet authenticated: it is used up now, refused or not, for as
	// long as its timestamp could still pass max_age. The check above and
	// this claim are two steps, and another queue may have decoded the
	// same packet, sent from another source, in between: the claim is
	// what decides which of them used it.
	if left := msg.Timestamp.Add(ds.MaxAge).Sub(now); left > 0 && !rs.claim(rk, t, t+int64(left)) {
		d.Reason = ReasonSPAReplay
		return
	}
	if err := msg.CheckAge(now, ds.MaxAge); err != nil {
		d.Reason = ReasonSPAStale
		return
	}
	if msg.Type == spa.TypeCommand {
		d.Reason = ReasonSPACommand
		return
	}
	to := msg.AllowIP.Unmap()
	switch {
	case to.IsUnspecified():
		// fwknop's -s: "whatever my source address is".
		if !ds.AnySource {
			d.Reason = ReasonSPASource
			return
		}
		to = src
	case to != src && !ds.AnySource:
		d.Reason = ReasonSPASource
		return
	}
	// For the NAT types the access ports are the gateway ports the client
	// will dial; where they lead is the static DNAT's business, so the NAT
	// field asks for nothing more.
	var ports uint64
	for _, rp := range msg.Ports {
		bit := slices.Index(dr.Open, Port{Proto(rp.Proto), rp.Num})
		if bit < 0 {
			d.Reason = ReasonSPAPorts
			return
		}
		ports |= 1 << bit
	}
	if ports == 0 {
		d.Reason = ReasonSPAPorts
		return
	}
	dur := int64(dr.OpenFor)
	if msg.Type.HasTimeout() && msg.ClientTimeout > 0 {
		maxDur := ds.MaxOpenFor
		if maxDur <= 0 {
			maxDur = dr.OpenFor
		}
		dur = int64(min(time.Duration(msg.ClientTimeout)*time.Second, maxDur))
	}
	d.Reason = ReasonOpened
	gk := keyOf(to, door)
	if to == src || g.shardOf(gk.source()) == s {
		s.grant(c, gk, t, dur, ports)
		return
	}
	*far = farGrant{k: gk, dur: dur, ports: ports}
}

// used reports whether the packet k was used and could still pass its age
// check at t.
func (r *replayShard) used(k key, t int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	until := r.t.get(k)
	return until != nil && *until > t
}

// claim marks the packet k used until then, unless it already is at t:
// then it reports false, and the packet is a replay.
func (r *replayShard) claim(k key, t, until int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v := r.t.get(k); v != nil && *v > t {
		return false
	}
	r.remember(k, until)
	return true
}

// remember marks the packet k used until then. r.mu is held.
func (r *replayShard) remember(k key, until int64) {
	tb := &r.t
	if v := tb.get(k); v != nil {
		*v = max(*v, until)
		return
	}
	if tb.full() {
		// Forget the packet closest to unusable anyway. Only packets that
		// authenticated get here, so only key holders can fill the cache.
		// The start of the sample needs no secret: an attacker cannot
		// choose digests.
		tb.evict(uint64(until)^k.hi, func(until *int64) uint64 { return since(*until) })
		r.evictions++
	}
	*tb.insert(k) = until
}

// ReplayEntry is a remembered SPA packet, for the state file.
type ReplayEntry struct {
	// Key is the first 20 bytes of the packet's SHA-256.
	Key   [20]byte
	Until time.Time
}

// ReplayEntries returns the remembered SPA packets that are still live.
func (e *Engine) ReplayEntries(now time.Time) []ReplayEntry {
	t := e.nanos(now)
	e.ctl.Lock()
	defer e.ctl.Unlock()
	var out []ReplayEntry
	e.eachReplay(func(r *replayShard) { out = r.appendLive(out, e.epoch, t) })
	return out
}

// appendLive appends the entries live at t to out. r.mu is held.
func (r *replayShard) appendLive(out []ReplayEntry, epoch time.Time, t int64) []ReplayEntry {
	for i := range r.t.slots {
		s := &r.t.slots[i]
		if !s.used || s.v <= t {
			continue
		}
		out = append(out, ReplayEntry{Key: s.k.digest(), Until: epoch.Add(time.Duration(s.v))})
	}
	return out
}

// errReplayFull is returned when saved entries do not fit the cache.
var errReplayFull = errors.New("replay cache full")

// RestoreReplay re-creates remembered SPA packets saved by an earlier run,
// so a packet captured before a restart cannot be replayed after it. It
// restores what fits and reports how many; an error says some did not
// (the cache is sharded by digest, so one share can fill while another
// has room).
func (e *Engine) RestoreReplay(rs []ReplayEntry, now time.Time) (int, error) {
	t := e.nanos(now)
	e.ctl.Lock()
	defer e.ctl.Unlock()
	g := e.gen.Load()
	n, lost := 0, 0
	for _, r := range rs {
		left := r.Until.Sub(now)
		if left <= 0 {
			continue
		}
		k := replayKey(r.Key[:])
		sh := g.replayOf(k)
		sh.mu.Lock()
		if sh.t.get(k) == nil && sh.t.full() {
			lost++
		} else {
			sh.remember(k, t+int64(left))
			n++
		}
		sh.mu.Unlock()
	}
	if lost > 0 {
		return n, fmt.Errorf("%d of %d entries left out: %w", lost, lost+n, errReplayFull)
	}
	return n, nil
}
