package cluster

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// Grant is one opening of a door for a source, as one gateway made it.
// Re-knocks that the engine records as new openings are new Grants; the
// same opening sent twice, or extended, merges into one.
type Grant struct {
	Door   string
	Source netip.Addr
	// Ports are the door's ports the grant covers, sorted by protocol then
	// number, without duplicates; empty means all of them, as after a
	// knock (verdict.Grant's convention).
	Ports  []verdict.Port
	Opened time.Time
	Until  time.Time
	// Origin is the name of the gateway that made the grant.
	Origin string
}

// Revoke closes a door for a source: it beats every grant for that door and
// source opened at or before At, wherever it was made.
type Revoke struct {
	Door   string
	Source netip.Addr
	At     time.Time
	// Until is how long the tombstone is kept: past the expiry of every
	// grant it beats (At plus the door's longest grant), or a grant still
	// in flight could come back to life once the tombstone is gone.
	// Node.Publish fills it in when zero.
	Until time.Time
}

// Replay is an SPA packet seen by some gateway, refused on all until Until.
type Replay struct {
	// Digest is the first 20 bytes of the packet's SHA-256
	// (verdict.ReplayEntry.Key).
	Digest [20]byte
	Until  time.Time
}

// TOTPUse records that Source completed door's TOTP sequence for Step, so
// that no other source may use that step's sequence anywhere.
type TOTPUse struct {
	Door   string
	Step   uint64
	Source netip.Addr
	Until  time.Time
}

// Ban puts Source in the penalty box until Until.
type Ban struct {
	Source netip.Addr
	Until  time.Time
}

// Update is a set of shared facts: what one message carries, what one
// local change publishes, and (from Store.Snapshot) the whole state.
type Update struct {
	Grants  []Grant
	Revokes []Revoke
	Replays []Replay
	TOTP    []TOTPUse
	Bans    []Ban
}

// Len is the number of facts in u.
func (u *Update) Len() int {
	return len(u.Grants) + len(u.Revokes) + len(u.Replays) + len(u.TOTP) + len(u.Bans)
}

// Changes are the effective changes a merge made, for the engine: apply
// Revokes first (drop the source's grant for the door if it was opened at
// or before At), then Grants (the merged grant for the door and source
// now, replacing whatever the engine holds), then the rest.
type Changes struct {
	Grants  []Grant
	Revokes []Revoke
	Replays []Replay
	TOTP    []TOTPUse
	Bans    []Ban
}

// Empty reports whether the merge changed nothing.
func (c *Changes) Empty() bool {
	return len(c.Grants)+len(c.Revokes)+len(c.Replays)+len(c.TOTP)+len(c.Bans) == 0
}

type grantKey struct {
	door string
	src  netip.Addr
}

// opening is one Grant as stored: times in Unix nanoseconds, ports nil for
// all of the door's ports. Two openings with the same opened time and
// origin are the same opening; they join.
type opening struct {
	opened, until int64
	origin        string
	ports         []verdict.Port
}

type tomb struct{ at, until int64 }

type totpKey struct {
	door string
	step uint64
	src  netip.Addr
}

// Store is the shared state. The zero value is not ready; use NewStore.
// It is not safe for concurrent use: Node serialises access.
//
// Every element joins with a max or a union, and openings that a tombstone
// beats are dropped (any that arrive later are beaten too, as long as the
// tombstone lives), so the state after merging a set of updates does not
// depend on their order or repetition. Facts already expired when merged
// are ignored, and Expire drops what has expired, so state only ever holds
// the live part of the join.
type Store struct {
	grants  map[grantKey][]opening
	revokes map[grantKey]tomb
	replays map[[20]byte]int64
	totp    map[totpKey]int64
	bans    map[netip.Addr]int64
	// names interns door and gateway names: each decoded message brings
	// its own copies, and thousands of grants name the same few.
	names map[string]string
}

// NewStore returns an empty Store.
func NewStore() *Store {
	return &Store{
		grants:  make(map[grantKey][]opening),
		revokes: make(map[grantKey]tomb),
		replays: make(map[[20]byte]int64),
		totp:    make(map[totpKey]int64),
		bans:    make(map[netip.Addr]int64),
		names:   make(map[string]string),
	}
}

func (s *Store) intern(name string) string {
	if v, ok := s.names[name]; ok {
		return v
	}
	s.names[name] = name
	return name
}

// Len counts the stored facts: openings, tombstones, digests, TOTP uses and
// bans.
func (s *Store) Len() int {
	n := len(s.revokes) + len(s.replays) + len(s.totp) + len(s.bans)
	for _, os := range s.grants {
		n += len(os)
	}
	return n
}

// Merge joins u into the state and returns the effective changes. Facts
// that expired by now are ignored.
func (s *Store) Merge(u *Update, now time.Time) Changes {
	t := now.UnixNano()
	var ch Changes
	// before holds the effective grant of each key the merge touches, as it
	// was, so only keys whose effective grant changed are reported.
	var before map[grantKey]effective
	touch := func(k grantKey) {
		if before == nil {
			before = make(map[grantKey]effective)
		}
		if _, ok := before[k]; !ok {
			before[k] = effectiveOf(s.grants[k], t)
		}
	}
	for i := range u.Revokes {
		r := &u.Revokes[i]
		at, until := r.At.UnixNano(), r.Until.UnixNano()
		if until <= t {
			continue
		}
		k := grantKey{r.Door, r.Source}
		old, had := s.revokes[k]
		if had && old.until <= t {
			// Expired, only not yet swept: as good as gone.
			had, old = false, tomb{}
		}
		nt := tomb{at: max(old.at, at), until: max(old.until, until)}
		if had && nt == old {
			continue
		}
		if !had {
			nt = tomb{at: at, until: until}
		}
		s.revokes[k] = nt
		if !had || nt.at > old.at {
			touch(k)
			s.prune(k, nt.at)
			ch.Revokes = append(ch.Revokes, Revoke{Door: r.Door, Source: r.Source, At: unixUTC(nt.at), Until: unixUTC(nt.until)})
		}
	}
	for i := range u.Grants {
		g := &u.Grants[i]
		o := opening{opened: g.Opened.UnixNano(), until: g.Until.UnixNano(), origin: g.Origin, ports: g.Ports}
		if len(o.ports) == 0 {
			o.ports = nil
		}
		if o.until <= t || o.until <= o.opened {
			continue
		}
		k := grantKey{g.Door, g.Source}
		// A tombstone beats the grant while it lives; an expired one that
		// Expire has not yet dropped must not, or gateways that swept and
		// gateways that did not would disagree.
		if tb, ok := s.revokes[k]; ok && tb.until > t && o.opened <= tb.at {
			continue
		}
		os := s.grants[k]
		j := slices.IndexFunc(os, func(x opening) bool { return x.opened == o.opened && x.origin == o.origin })
		if j < 0 {
			touch(k)
			o.ports = slices.Clone(o.ports)
			o.origin = s.intern(o.origin)
			// Assigning to a map overwrites a string key even when it is
			// present, so the door is interned either way.
			k.door = s.intern(k.door)
			s.grants[k] = append(os, o)
			continue
		}
		until := max(os[j].until, o.until)
		ports, grew := unionPorts(os[j].ports, o.ports)
		if until == os[j].until && !grew {
			continue
		}
		touch(k)
		os[j].until, os[j].ports = until, ports
	}
	for k, was := range before {
		now := effectiveOf(s.grants[k], t)
		if now.equal(was) || now.until == 0 {
			// A grant that vanished was beaten by a tombstone, which is
			// reported in Revokes.
			continue
		}
		ch.Grants = append(ch.Grants, now.grant(k))
	}
	for i := range u.Replays {
		if _, ok := joinUntil(s.replays, u.Replays[i].Digest, u.Replays[i].Until, t); ok {
			ch.Replays = append(ch.Replays, u.Replays[i])
		}
	}
	for i := range u.TOTP {
		x := &u.TOTP[i]
		// A use already known is no news to the engine, whatever its
		// expiry.
		if isNew, ok := joinUntil(s.totp, totpKey{x.Door, x.Step, x.Source}, x.Until, t); ok && isNew {
			ch.TOTP = append(ch.TOTP, *x)
		}
	}
	for i := range u.Bans {
		if _, ok := joinUntil(s.bans, u.Bans[i].Source, u.Bans[i].Until, t); ok {
			ch.Bans = append(ch.Bans, u.Bans[i])
		}
	}
	return ch
}

// joinUntil joins an expiry into m[k], the later one winning, unless it
// has expired by t. It reports whether k is new and whether m changed.
func joinUntil[K comparable](m map[K]int64, k K, until time.Time, t int64) (isNew, changed bool) {
	u := until.UnixNano()
	old, ok := m[k]
	if u <= t || (ok && old >= u) {
		return false, false
	}
	m[k] = u
	// One that expired and was not yet swept is as good as gone.
	return !ok || old <= t, true
}

// beats returns the live tombstone that beats g, if any.
func (s *Store) beats(g *Grant, now time.Time) (Revoke, bool) {
	tb, ok := s.revokes[grantKey{g.Door, g.Source}]
	if !ok || tb.until <= now.UnixNano() || g.Opened.UnixNano() > tb.at {
		return Revoke{}, false
	}
	return Revoke{Door: g.Door, Source: g.Source, At: unixUTC(tb.at), Until: unixUTC(tb.until)}, true
}

// prune drops k's openings that a tombstone at at beats.
func (s *Store) prune(k grantKey, at int64) {
	os := slices.DeleteFunc(s.grants[k], func(o opening) bool { return o.opened <= at })
	if len(os) == 0 {
		delete(s.grants, k)
		return
	}
	s.grants[k] = os
}

// Expire drops what has expired by now and returns how many facts it
// dropped. Merge ignores expired facts anyway, so this bounds memory; the
// engine expires its own copy.
func (s *Store) Expire(now time.Time) int {
	t := now.UnixNano()
	n := 0
	for k, os := range s.grants {
		l := len(os)
		os = slices.DeleteFunc(os, func(o opening) bool { return o.until <= t })
		n += l - len(os)
		if len(os) == 0 {
			delete(s.grants, k)
		} else {
			s.grants[k] = os
		}
	}
	for k, tb := range s.revokes {
		if tb.until <= t {
			delete(s.revokes, k)
			n++
		}
	}
	n += expireMap(s.replays, t)
	n += expireMap(s.totp, t)
	n += expireMap(s.bans, t)
	return n
}

func expireMap[K comparable](m map[K]int64, t int64) int {
	n := 0
	for k, until := range m {
		if until <= t {
			delete(m, k)
			n++
		}
	}
	return n
}

// Snapshot returns every live fact, for a full-state push and for the state
// file. Openings are returned one Grant each, not merged, so that a peer
// merging the snapshot ends in the same state. The order is unspecified.
func (s *Store) Snapshot(now time.Time) Update {
	t := now.UnixNano()
	var u Update
	for k, os := range s.grants {
		for _, o := range os {
			if o.until > t {
				u.Grants = append(u.Grants, Grant{Door: k.door, Source: k.src, Ports: slices.Clone(o.ports),
					Opened: unixUTC(o.opened), Until: unixUTC(o.until), Origin: o.origin})
			}
		}
	}
	for k, tb := range s.revokes {
		if tb.until > t {
			u.Revokes = append(u.Revokes, Revoke{Door: k.door, Source: k.src, At: unixUTC(tb.at), Until: unixUTC(tb.until)})
		}
	}
	for d, until := range s.replays {
		if until > t {
			u.Replays = append(u.Replays, Replay{Digest: d, Until: unixUTC(until)})
		}
	}
	for k, until := range s.totp {
		if until > t {
			u.TOTP = append(u.TOTP, TOTPUse{Door: k.door, Step: k.step, Source: k.src, Until: unixUTC(until)})
		}
	}
	for src, until := range s.bans {
		if until > t {
			u.Bans = append(u.Bans, Ban{Source: src, Until: unixUTC(until)})
		}
	}
	return u
}

// Grants returns the effective grant of every door and source that has a
// live one: the join of its live openings, as the engine should hold it.
func (s *Store) Grants(now time.Time) []Grant {
	t := now.UnixNano()
	var out []Grant
	for k, os := range s.grants {
		if e := effectiveOf(os, t); e.until != 0 {
			out = append(out, e.grant(k))
		}
	}
	return out
}

// effective is the join of a door and source's live openings: ports
// joined, the latest expiry, the earliest opening, and the origin of the
// opening that lasts longest (ties to the lower name, so every gateway
// names the same one). until is 0 when there is none.
type effective struct {
	opened, until int64
	origin        string
	ports         []verdict.Port
}

func effectiveOf(os []opening, t int64) effective {
	var e effective
	first := true
	for _, o := range os {
		if o.until <= t {
			continue
		}
		if first {
			e = effective{opened: o.opened, until: o.until, origin: o.origin, ports: o.ports}
			first = false
			continue
		}
		e.opened = min(e.opened, o.opened)
		if o.until > e.until || (o.until == e.until && o.origin < e.origin) {
			e.until, e.origin = o.until, o.origin
		}
		e.ports, _ = unionPorts(e.ports, o.ports)
	}
	return e
}

func (e effective) equal(o effective) bool {
	return e.opened == o.opened && e.until == o.until && e.origin == o.origin &&
		(e.ports == nil) == (o.ports == nil) && slices.Equal(e.ports, o.ports)
}

func (e effective) grant(k grantKey) Grant {
	return Grant{Door: k.door, Source: k.src, Ports: slices.Clone(e.ports),
		Opened: unixUTC(e.opened), Until: unixUTC(e.until), Origin: e.origin}
}

// unionPorts joins two sorted port sets, nil being all ports. It returns a
// new slice when the union is larger than a, and whether it is.
func unionPorts(a, b []verdict.Port) ([]verdict.Port, bool) {
	if a == nil {
		return nil, false
	}
	if b == nil {
		return nil, true
	}
	out := make([]verdict.Port, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && comparePorts(a[i], b[j]) < 0):
			out = append(out, a[i])
			i++
		case i == len(a) || comparePorts(a[i], b[j]) > 0:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i, j = i+1, j+1
		}
	}
	if len(out) == len(a) {
		return a, false
	}
	return out, true
}

func comparePorts(a, b verdict.Port) int {
	if c := cmp.Compare(a.Proto, b.Proto); c != 0 {
		return c
	}
	return cmp.Compare(a.Num, b.Num)
}

// SortPorts returns ports sorted and without duplicates, the form Grant
// requires, in a new slice; nil stays nil (all ports).
func SortPorts(ports []verdict.Port) []verdict.Port {
	if len(ports) == 0 {
		return nil
	}
	out := slices.Clone(ports)
	slices.SortFunc(out, comparePorts)
	return slices.Compact(out)
}

// unixUTC turns stored nanoseconds back into a time, in UTC so that logs
// and the state file do not depend on the host's zone.
func unixUTC(ns int64) time.Time { return time.Unix(0, ns).UTC() }
