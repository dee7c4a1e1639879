package rules

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"

	"github.com/knockgate/knockgate/verdict"
)

// firstKnocks refuses two sequences that start with the same port. The
// engine starts tracking a source's sequence by looking up its first knock,
// so a shared first knock would leave it guessing which door is meant.
func (c *compiler) firstKnocks(doors []*doorSrc) {
	type seqRef struct {
		door string
		l    *portList
	}
	var seqs []seqRef
	for _, d := range doors {
		if d.seq != nil {
			seqs = append(seqs, seqRef{d.door.Name, d.seq})
		}
		if d.closeSeq != nil && !d.closeIsSeq {
			seqs = append(seqs, seqRef{d.door.Name, d.closeSeq})
		}
	}
	// Report the later of two clashing sequences, as a compiler reports the
	// second definition of a name.
	slices.SortStableFunc(seqs, func(a, b seqRef) int { return a.l.elems[0].Start.Byte - b.l.elems[0].Start.Byte })
	first := map[verdict.Port]seqRef{}
	for _, s := range seqs {
		p := s.l.ports[0]
		prev, ok := first[p]
		if !ok {
			first[p] = s
			continue
		}
		c.errorf(s.l.elems[0].Ptr(), &s.l.attr.Range,
			fmt.Sprintf("Door %q %s already starts with %s at %s. The engine tells which sequence a source has begun by its first knock, so no two sequences or close_sequences may start with the same port.",
				prev.door, prev.l.attr.Name, p, pos(prev.l.elems[0])),
			"door %q %s starts with %s, as door %q %s does", s.door, s.l.attr.Name, p, prev.door, prev.l.attr.Name)
	}
}

// knockOrOpen refuses a port that is both knocked on and protected: the
// engine drops a knock and counts it, while it passes a packet to a
// protected port for a source with a grant, so it could not do both.
func (c *compiler) knockOrOpen(doors []*doorSrc) {
	type use struct {
		door string
		l    *portList
		i    int
	}
	var uses []use
	for _, d := range doors {
		for _, l := range []*portList{d.seq, d.closeSeq, d.open} {
			if l == nil {
				continue
			}
			for i := range l.ports {
				uses = append(uses, use{d.door.Name, l, i})
			}
		}
	}
	slices.SortStableFunc(uses, func(a, b use) int { return a.l.elems[a.i].Start.Byte - b.l.elems[b.i].Start.Byte })
	role := func(u use) string {
		if u.l.attr.Name == "open" {
			return fmt.Sprintf("door %q opens it", u.door)
		}
		return fmt.Sprintf("door %q %s knocks on it", u.door, u.l.attr.Name)
	}
	knocks := map[verdict.Port]use{}
	opens := map[verdict.Port]use{}
	for _, u := range uses {
		p := u.l.ports[u.i]
		mine, theirs := knocks, opens
		if u.l.attr.Name == "open" {
			mine, theirs = opens, knocks
		}
		if other, ok := theirs[p]; ok {
			c.errorf(u.l.elems[u.i].Ptr(), &u.l.attr.Range,
				fmt.Sprintf("Here %s, but %s at %s. A knock is dropped and counted while a protected port passes for a source with a grant, so one port cannot be both; knock on ports nothing else uses.",
					role(u), role(other), pos(other.l.elems[other.i])),
				"%s is both a knock and a protected port", p)
		}
		if _, ok := mine[p]; !ok {
			mine[p] = u
		}
	}
}

// totpRanges checks that a TOTP range holds no other rule's port, and
// overlaps no other range: the whole range is the door's.
func (c *compiler) totpRanges(doors []*doorSrc) {
	for _, d := range doors {
		t := d.door.TOTP
		if t == nil {
			continue
		}
		clash := func(what string, at string) {
			c.errorf(d.totpRange, nil,
				fmt.Sprintf("%s at %s. Every port of a TOTP range is reserved for its door's derived knocks, so nothing else may use one.", what, at),
				"TOTP range of door %q overlaps another rule", d.door.Name)
		}
		for _, o := range doors {
			for _, l := range []*portList{o.seq, o.closeSeq, o.open} {
				if l == nil {
					continue
				}
				for i, p := range l.ports {
					if t.Contains(p) {
						clash(fmt.Sprintf("Door %q %s uses %v", o.door.Name, l.attr.Name, p), pos(l.elems[i]))
					}
				}
			}
			if o.door.SPA != nil && t.Contains(o.door.SPA.Port) {
				clash(fmt.Sprintf("Door %q listens for SPA on %v", o.door.Name, o.door.SPA.Port), pos(*o.spaPort))
			}
			if o != d && o.door.TOTP != nil && o.door.TOTP.Proto == t.Proto && o.door.TOTP.Lo <= t.Hi && t.Lo <= o.door.TOTP.Hi {
				clash(fmt.Sprintf("Door %q's TOTP range overlaps it", o.door.Name), pos(*o.totpRange))
			}
		}
	}
}

// spaPorts checks that an SPA port is nobody's knock or protected port.
// Several doors may share one SPA port: the HMAC tells their packets apart.
func (c *compiler) spaPorts(doors []*doorSrc) {
	for j, d := range doors {
		if d.door.SPA == nil {
			continue
		}
		p := d.door.SPA.Port
		// The engine gives an SPA packet to the first door on its port,
		// in policy order, that admits the source and whose HMAC the
		// packet carries; a later door with the same HMAC key never gets
		// the packets of the sources both admit.
		for _, o := range doors[:j] {
			if prev := o.door.SPA; prev != nil && prev.Port == p && bytes.Equal(prev.Keys.HMAC, d.door.SPA.Keys.HMAC) &&
				prev.Keys.HMACDigest == d.door.SPA.Keys.HMACDigest {
				if both, ok := commonSources(o.door.AllowFrom, d.door.AllowFrom); ok {
					c.errorf(d.spaPort, nil,
						fmt.Sprintf("Door %q takes SPA packets on the same port with the same HMAC key and digest, and it comes first, so it takes every packet from %s. Give each door its own HMAC key, or allow_from lists that do not overlap.", o.door.Name, both),
						"spa of door %q can never open it", d.door.Name)
				}
			}
		}
		for _, o := range doors {
			for _, l := range []*portList{o.seq, o.closeSeq, o.open} {
				if l == nil {
					continue
				}
				for i, q := range l.ports {
					if q == p {
						c.errorf(d.spaPort, nil,
							fmt.Sprintf("Door %q %s uses it at %s. SPA packets are checked and dropped there, so the port can serve nothing else.",
								o.door.Name, l.attr.Name, pos(l.elems[i])),
							"spa port %v of door %q is used by another rule", p, d.door.Name)
					}
				}
			}
		}
	}
}

// commonSources reports whether two allow_from lists (empty: any source)
// admit a source in common, and names one such range.
func commonSources(a, b []netip.Prefix) (string, bool) {
	switch {
	case len(a) == 0 && len(b) == 0:
		return "any source", true
	case len(a) == 0:
		return b[0].String(), true
	case len(b) == 0:
		return a[0].String(), true
	}
	for _, p := range a {
		for _, q := range b {
			if p.Overlaps(q) {
				if p.Bits() > q.Bits() {
					return p.String(), true
				}
				return q.String(), true
			}
		}
	}
	return "", false
}
