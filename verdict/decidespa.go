package verdict

import (
	"net/netip"
	"slices"
	"time"

	"github.com/knockgate/knockgate/verdict/fwknop"
)

// The per-source SPA rate limit, a GCRA: one packet per spaInterval on
// average, bursts of spaBurst. A person runs a client a few times at most;
// anything faster is a flood, and is dropped before any cryptography.
const (
	spaInterval = 250 * time.Millisecond
	spaBurst    = 4
)

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
	doors := c.spaLists[c.at[pi][p.DstPort]]
	d.Door = doors[0]
	if !s.spaAllow(sk, t) {
		d.Reason = ReasonSPARateLimited
		return
	}
	payload := p.Payload
	if fwknop.Prefilter(payload) != nil {
		d.Reason = ReasonSPAInvalid
		return
	}
	sum := fwknop.ReplayKey(payload)
	rk := replayKey(sum[:])
	rs := g.replayOf(rk)
	if rs.used(rk, t) {
		d.Reason = ReasonSPAReplay
		return
	}
	door := NoDoor
	for _, di := range doors {
		ds := c.policy.Doors[di].SPA
		if c.allowed(di, src) && fwknop.VerifyHMAC(payload, ds.Keys.HMAC, ds.Keys.HMACDigest) {
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
	msg, err := fwknop.Decode(payload, ds.Keys)
	if err != nil {
		d.Reason = ReasonSPAInvalid
		return
	}
	// The packet authenticated: it is used up now, refused or not, for as
	// long as its timestamp could still pass max_age. The check above and
	// this claim are two steps, and another queue may have decoded the
	// same packet, sent from another source, in between: the claim is
	// what decides which of them used it.
	if left := replayUntil(msg.Timestamp, ds.MaxAge).Sub(now); left > 0 {
		until := addSat(t, int64(left))
		if !rs.claim(rk, t, until) {
			d.Reason = ReasonSPAReplay
			return
		}
		c.ring.push(sharedRaw{kind: SharedReplay, c: c, k: rk, until: until})
	}
	if err := msg.CheckAge(now, ds.MaxAge); err != nil {
		d.Reason = ReasonSPAStale
		return
	}
	if msg.Type == fwknop.TypeCommand {
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
		dur = int64(min(time.Duration(msg.ClientTimeout)*time.Second, dr.maxClientTimeout()))
	}
	d.Reason = ReasonOpened
	gk := keyOf(to, door)
	c.ring.push(sharedRaw{kind: SharedGrant, c: c, k: gk, at: t, until: t + dur, ports: ports})
	if to == src || g.shardOf(gk.source()) == s {
		s.grant(c, gk, t, dur, ports)
		return
	}
	*far = farGrant{k: gk, dur: dur, ports: ports}
}

// maxClientTimeout is the longest grant an SPA client may ask for with a
// timeout message (fwknop -f): max_open_for, else open_for.
func (d *Door) maxClientTimeout() time.Duration {
	if d.SPA != nil && d.SPA.MaxOpenFor > 0 {
		return d.SPA.MaxOpenFor
	}
	return d.OpenFor
}

// longestGrant is the longest grant the door can give: open_for for a
// knock or a plain SPA message, maxClientTimeout for a timeout message.
// A grant from elsewhere (a state file) is held to it.
func (d *Door) longestGrant() time.Duration { return max(d.OpenFor, d.maxClientTimeout()) }
