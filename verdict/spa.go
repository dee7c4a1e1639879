package verdict

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
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

// spaState is the engine's SPA memory: packets already used (the replay
// cache) and the rate limit per source.
type spaState struct {
	// replay holds packets that authenticated, keyed by the first 20
	// bytes of their SHA-256, until they could no longer pass max_age.
	replay table[int64]
	// rate holds each recent sender's theoretical arrival time.
	rate table[int64]
}

func newSPAState(c *compiled) spaState {
	n := 1 // a policy without SPA keeps the tables tiny
	for _, d := range c.policy.Doors {
		if d.SPA != nil {
			n = c.policy.MaxReplay
			break
		}
	}
	return spaState{
		replay: newTable[int64](n, rand.Uint64()),
		rate:   newTable[int64](min(n, c.policy.MaxSources), rand.Uint64()),
	}
}

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

func replayKey(sum [32]byte) key {
	return key{hi: be64(sum[0:8]), lo: be64(sum[8:16]),
		door: uint32(sum[16])<<24 | uint32(sum[17])<<16 | uint32(sum[18])<<8 | uint32(sum[19])}
}

// spaAllow applies the per-source rate limit.
func (e *Engine) spaAllow(src netip.Addr, t int64) bool {
	const interval, tolerance = int64(spaInterval), int64(spaInterval) * (spaBurst - 1)
	tb := &e.spa.rate
	k := keyOf(src, 0)
	tat := tb.get(k)
	if tat == nil {
		if tb.full() {
			// Forget the sender whose allowance is fullest; a flood of
			// spoofed sources only ever evicts other senders' rate
			// entries, never a grant.
			tb.evict(e.rand(), func(tat *int64) uint64 { return since(*tat) })
		}
		tat = tb.insert(k)
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
func (e *Engine) decideSPA(d *Decision, src netip.Addr, p *Packet, pi int, now time.Time, t int64) {
	c := e.c
	doors := c.spaLists[c.spaAt[pi][p.DstPort]]
	d.Door = doors[0]
	if !e.spaAllow(src, t) {
		d.Reason = ReasonSPARateLimited
		return
	}
	payload := p.Payload
	if spa.Prefilter(payload) != nil {
		d.Reason = ReasonSPAInvalid
		return
	}
	rk := replayKey(spa.ReplayKey(payload))
	if until := e.spa.replay.get(rk); until != nil && *until > t {
		d.Reason = ReasonSPAReplay
		return
	}
	door := NoDoor
	for _, di := range doors {
		s := c.policy.Doors[di].SPA
		if c.allowed(di, src) && spa.VerifyHMAC(payload, s.Keys.HMAC, s.Keys.HMACDigest) {
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
	s := dr.SPA
	msg, err := spa.Decode(payload, s.Keys)
	if err != nil {
		d.Reason = ReasonSPAInvalid
		return
	}
	// The packet authenticated: it is used up now, refused or not, for as
	// long as its timestamp could still pass max_age.
	if left := msg.Timestamp.Add(s.MaxAge).Sub(now); left > 0 {
		e.remember(rk, t+int64(left))
	}
	if err := msg.CheckAge(now, s.MaxAge); err != nil {
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
		if !s.AnySource {
			d.Reason = ReasonSPASource
			return
		}
		to = src
	case to != src && !s.AnySource:
		d.Reason = ReasonSPASource
		return
	}
	// For the NAT types the access ports are the gateway ports the client
	// will dial; where they lead is the static DNAT's business, so the NAT
	// field asks for nothing more.
	var ports uint64
	for _, rp := range msg.Ports {
		want := Port{Proto(rp.Proto), rp.Num}
		bit := -1
		for i, o := range dr.Open {
			if o == want {
				bit = i
				break
			}
		}
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
		maxDur := s.MaxOpenFor
		if maxDur <= 0 {
			maxDur = dr.OpenFor
		}
		dur = int64(min(time.Duration(msg.ClientTimeout)*time.Second, maxDur))
	}
	e.grant(keyOf(to, door), t, dur, ports)
	d.Reason = ReasonOpened
}

func (e *Engine) remember(k key, until int64) {
	tb := &e.spa.replay
	if v := tb.get(k); v != nil {
		*v = max(*v, until)
		return
	}
	if tb.full() {
		// Forget the packet closest to unusable anyway. Only packets that
		// authenticated get here, so only key holders can fill the cache.
		tb.evict(e.rand(), func(until *int64) uint64 { return since(*until) })
		e.evictions++
	}
	*tb.insert(k) = until
}

// sweepSPA drops replay entries that can no longer pass any age check and
// rate entries whose allowance is full again.
func (e *Engine) sweepSPA(t int64) {
	e.spa.replay.sweep(func(_ key, until *int64) bool { return *until <= t })
	e.spa.rate.sweep(func(_ key, tat *int64) bool { return *tat <= t })
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
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []ReplayEntry
	for i := range e.spa.replay.slots {
		s := &e.spa.replay.slots[i]
		if !s.used || s.v <= t {
			continue
		}
		var r ReplayEntry
		for j := 0; j < 8; j++ {
			r.Key[j] = byte(s.k.hi >> (56 - 8*j))
			r.Key[8+j] = byte(s.k.lo >> (56 - 8*j))
		}
		for j := 0; j < 4; j++ {
			r.Key[16+j] = byte(s.k.door >> (24 - 8*j))
		}
		r.Until = e.epoch.Add(time.Duration(s.v))
		out = append(out, r)
	}
	return out
}

// errReplayFull is returned when saved entries do not fit the cache.
var errReplayFull = errors.New("replay cache full")

// RestoreReplay re-creates remembered SPA packets saved by an earlier run,
// so a packet captured before a restart cannot be replayed after it.
func (e *Engine) RestoreReplay(rs []ReplayEntry, now time.Time) (int, error) {
	t := e.nanos(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, r := range rs {
		left := r.Until.Sub(now)
		if left <= 0 {
			continue
		}
		var sum [32]byte
		copy(sum[:], r.Key[:])
		k := replayKey(sum)
		if e.spa.replay.get(k) == nil && e.spa.replay.full() {
			return n, errReplayFull
		}
		e.remember(k, t+int64(left))
		n++
	}
	return n, nil
}
