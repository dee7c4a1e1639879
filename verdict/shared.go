package verdict

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// What a cluster of gateways shares (package cluster) crosses the engine
// in two directions, both off the per-packet path's allocations:
//
//   - out: Decide records each grant opened, close sequence, SPA packet
//     used, TOTP sequence used and ban imposed in a ring allocated once by
//     ShareEvents, and wakes its reader; the daemon drains it
//     (DrainShared) and publishes the events. A full ring drops the event
//     and counts it: the transport's full-state exchange repairs it.
//   - in: ApplyGrant, RevokeAt, AddReplay, MarkTOTPUsed and Ban import
//     what peers did, each bounded by this gateway's own policy.
//
// Imports never enter the ring, so a fact does not echo back to the
// cluster it came from.

// SharedKind is a kind of shared event.
type SharedKind uint8

// Kinds of shared events.
const (
	// SharedGrant: a grant opened (or renewed) for Door and Source,
	// covering Ports (nil: all the door's) from At until Until.
	SharedGrant SharedKind = iota + 1
	// SharedRevoke: a close sequence ended Source's grant for Door at At.
	SharedRevoke
	// SharedReplay: the SPA packet Digest is used until Until.
	SharedReplay
	// SharedTOTP: Source completed Door's TOTP sequence of Step; Until is
	// the end of that sequence's acceptance window.
	SharedTOTP
	// SharedBan: Source is in the penalty box until Until.
	SharedBan
)

// SharedEvent is one event for the cluster.
type SharedEvent struct {
	Kind      SharedKind
	Door      string
	Source    netip.Addr
	Ports     []Port
	Digest    [20]byte
	Step      uint64
	At, Until time.Time
}

// sharedRaw is a SharedEvent as Decide records it: a plain value, the
// door and ports as the policy c that decided it numbers them.
type sharedRaw struct {
	kind      SharedKind
	c         *compiled
	k         key // source and door; the digest for a replay
	step      uint64
	at, until int64
	ports     uint64
}

// sharedRing is a bounded queue of sharedRaw. buf is allocated by
// ShareEvents and never grows; until then push returns at once.
type sharedRing struct {
	on    atomic.Bool
	mu    sync.Mutex // a leaf: taken under a shard's lock, never around one
	buf   []sharedRaw
	head  int
	n     int
	lost  uint64
	ready chan struct{}
}

func (r *sharedRing) push(ev sharedRaw) {
	if r == nil || !r.on.Load() {
		return
	}
	r.mu.Lock()
	if r.n == len(r.buf) {
		r.lost++
		r.mu.Unlock()
		return
	}
	r.buf[(r.head+r.n)%len(r.buf)] = ev
	r.n++
	// Only the first event after a drain wakes the drainer: it takes
	// everything there is when it runs, so a burst costs one wake-up.
	wake := r.n == 1
	r.mu.Unlock()
	if wake {
		select {
		case r.ready <- struct{}{}:
		default:
		}
	}
}

// ShareEvents turns on the recording of shared events, in a ring of
// capacity events, and returns the channel that signals that some are
// waiting for DrainShared. Call it once, before the engine decides packets
// concurrently with DrainShared.
func (e *Engine) ShareEvents(capacity int) <-chan struct{} {
	r := &e.shared
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.buf == nil {
		r.buf = make([]sharedRaw, max(capacity, 1))
		r.ready = make(chan struct{}, 1)
		r.on.Store(true)
	}
	return r.ready
}

// DrainShared appends the recorded events to dst, oldest first, and
// returns it with how many events a full ring dropped since the last
// call. One goroutine drains: the ready channel wakes it once per batch.
func (e *Engine) DrainShared(dst []SharedEvent) ([]SharedEvent, uint64) {
	r := &e.shared
	r.mu.Lock()
	raws := make([]sharedRaw, r.n)
	for i := range raws {
		raws[i] = r.buf[(r.head+i)%len(r.buf)]
		r.buf[(r.head+i)%len(r.buf)] = sharedRaw{} // let an old policy go
	}
	r.head, r.n = 0, 0
	lost := r.lost
	r.lost = 0
	r.mu.Unlock()
	for _, raw := range raws {
		dst = append(dst, e.sharedEvent(&raw))
	}
	return dst, lost
}

func (e *Engine) sharedEvent(raw *sharedRaw) SharedEvent {
	ev := SharedEvent{Kind: raw.kind}
	if raw.until != 0 {
		ev.Until = e.epoch.Add(time.Duration(raw.until))
	}
	switch raw.kind {
	case SharedReplay:
		ev.Digest = raw.k.digest()
		return ev
	case SharedBan:
		ev.Source = raw.k.addr()
		return ev
	}
	door := &raw.c.policy.Doors[raw.k.door]
	ev.Door, ev.Source = door.Name, raw.k.addr()
	switch raw.kind {
	case SharedGrant:
		g := e.grantOf(raw.c, raw.k, &grant{opened: raw.at, until: raw.until, ports: raw.ports})
		ev.Ports, ev.At = g.Ports, g.Opened
	case SharedRevoke:
		ev.At = e.epoch.Add(time.Duration(raw.at))
	case SharedTOTP:
		ev.Step = raw.step
		_, last := door.TOTP.AcceptedSteps(raw.step)
		ev.Until = door.TOTP.StepEnds(last)
	}
	return ev
}

// Errors of the imports.
var (
	// ErrUnknownDoor: the policy has no door of that name (or no TOTP
	// door, for MarkTOTPUsed).
	ErrUnknownDoor = errors.New("no such door")
	// ErrTooLong: a grant longer than the door's own longest.
	ErrTooLong = errors.New("longer than the door grants")
	// ErrNoPorts: a grant for none of the ports the door opens.
	ErrNoPorts = errors.New("covers no port the door opens")
)

// MaxOpenFor is the longest grant the door makes: its open_for, or its SPA
// max_open_for when that is longer.
func (d *Door) MaxOpenFor() time.Duration {
	if d.SPA != nil && d.SPA.MaxOpenFor > d.OpenFor {
		return d.SPA.MaxOpenFor
	}
	return d.OpenFor
}

// ApplyGrant puts in place the grant a peer made: src may use the door's
// ports (nil: all of them) from opened until until, replacing the grant
// the engine holds for that door and source. A grant longer than the
// door's MaxOpenFor is refused (ErrTooLong), as is one for ports the door
// does not open; one over by now is ignored. A max_connections door
// counts its connections on each gateway.
func (e *Engine) ApplyGrant(door string, src netip.Addr, ports []Port, opened, until, now time.Time) error {
	g := e.gen.Load()
	di, ok := g.c.doorIndex[door]
	if !ok {
		return fmt.Errorf("failed to apply grant for %s: %w: %q", src, ErrUnknownDoor, door)
	}
	d := &g.c.policy.Doors[di]
	if until.Sub(opened) > d.MaxOpenFor() {
		return fmt.Errorf("failed to apply grant of door %q for %s: %v: %w (%v)", door, src, until.Sub(opened), ErrTooLong, d.MaxOpenFor())
	}
	mask := portMask(d, ports)
	if mask == 0 {
		return fmt.Errorf("failed to apply grant of door %q for %s: %v %w", door, src, ports, ErrNoPorts)
	}
	left := until.Sub(now)
	if left <= 0 || !src.IsValid() {
		return nil
	}
	t := e.nanos(now)
	k := keyOf(src.Unmap(), di)
	cur, s, _ := e.lockSource(k.source())
	defer s.mu.Unlock()
	if cur != g {
		// A reload came in between: find the door again.
		if di, ok = cur.c.doorIndex[door]; !ok {
			return nil
		}
		if mask = portMask(&cur.c.policy.Doors[di], ports); mask == 0 {
			return nil
		}
		k.door = uint32(di)
	}
	gr := s.grants.get(k)
	if gr == nil {
		if s.grants.full() {
			s.evictGrant()
		}
		gr = s.grants.insert(k)
	}
	*gr = grant{opened: t - int64(now.Sub(opened)), until: addSat(t, int64(left)), ports: mask,
		left: uint32(cur.c.policy.Doors[di].MaxConnections)}
	return nil
}

// RevokeAt ends src's grant for door if it was opened at or before at: a
// revoke made on another gateway beats the grants made before it, never a
// later knock. It reports whether it dropped a grant.
func (e *Engine) RevokeAt(door string, src netip.Addr, at, now time.Time) (bool, error) {
	g := e.gen.Load()
	if _, ok := g.c.doorIndex[door]; !ok {
		return false, fmt.Errorf("failed to revoke for %s: %w: %q", src, ErrUnknownDoor, door)
	}
	t := e.nanos(now) - int64(now.Sub(at))
	k := keyOf(src.Unmap(), 0)
	cur, s, _ := e.lockSource(k)
	defer s.mu.Unlock()
	di, ok := cur.c.doorIndex[door]
	if !ok {
		return false, nil
	}
	k.door = uint32(di)
	gr := s.grants.get(k)
	if gr == nil || gr.opened > t {
		return false, nil
	}
	s.grants.delete(k)
	return true, nil
}

// AddReplay marks the SPA packet whose digest (the first 20 bytes of its
// SHA-256) is given as used until until, as if it had arrived here.
func (e *Engine) AddReplay(digest [20]byte, until, now time.Time) {
	left := until.Sub(now)
	if left <= 0 {
		return
	}
	t := e.nanos(now)
	k := replayKey(digest[:])
	e.ctl.Lock() // keeps the generation, and its replay shards, in place
	defer e.ctl.Unlock()
	rs := e.gen.Load().replayOf(k)
	rs.mu.Lock()
	rs.remember(k, addSat(t, int64(left)))
	rs.mu.Unlock()
}

// MarkTOTPUsed records that src completed door's TOTP sequence of step on
// another gateway: a second source completing it here in the same step is
// refused as ReasonKnockReplay. The mark lasts as long as the step's
// sequence is accepted, as a local one does. It reports false when another
// source already holds the step here (the first one seen keeps it).
func (e *Engine) MarkTOTPUsed(door string, step uint64, src netip.Addr) (bool, error) {
	g := e.gen.Load()
	di, ok := g.c.doorIndex[door]
	if ok {
		for i := range g.c.totp {
			td := &g.c.totp[i]
			if td.door == di {
				return td.live.use(uint8(step%totpSteps), step, keyOf(src.Unmap(), 0)), nil
			}
		}
	}
	return false, fmt.Errorf("failed to mark TOTP step %d used by %s: %w: %q", step, src, ErrUnknownDoor, door)
}

// Ban puts src in the penalty box until until, or leaves a later ban in
// place. A full penalty table makes room only by forgetting a source that
// is not banned: a peer's ban never evicts a live one. It reports whether
// src is banned until at least until; with the penalty box off it is not.
func (e *Engine) Ban(src netip.Addr, until, now time.Time) bool {
	left := until.Sub(now)
	if left <= 0 || !src.IsValid() {
		return false
	}
	t := e.nanos(now)
	k := keyOf(src.Unmap(), 0)
	g, s, h := e.lockSource(k)
	defer s.mu.Unlock()
	if g.c.policy.Penalty.Failures <= 0 {
		return false
	}
	p := s.penalty.getH(k, h)
	if p == nil {
		if s.penalty.full() {
			i := slices.IndexFunc(s.penalty.slots, func(sl slot[penalty]) bool { return sl.used && sl.v.until <= t })
			if i < 0 {
				return false
			}
			s.penalty.deleteAt(i)
		}
		p = s.penalty.insertH(k, h)
		*p = penalty{window: t}
	}
	p.until = max(p.until, addSat(t, int64(left)))
	return true
}
