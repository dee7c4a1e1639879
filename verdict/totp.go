package verdict

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// TOTP makes a door's knock sequence a function of a shared secret and the
// time, in the manner of RFC 6238: the step counter T = unix time / Step is
// the HMAC-SHA256 message, and the ports come from the MAC. A sniffed
// sequence is worthless once its acceptance window (AcceptedSteps) has
// passed.
type TOTP struct {
	Secret []byte
	Step   time.Duration
	// Length is the number of knocks.
	Length int
	// Proto, Lo and Hi are where derived knocks fall: Proto/Lo to Proto/Hi,
	// inclusive. The whole range is reserved for the door: every packet to
	// it is dropped, and no other rule may use a port in it, so a derived
	// knock never collides with a protected port or another door's knock.
	Proto  Proto
	Lo, Hi uint16
}

// MinTOTPSecret is the shortest secret accepted, RFC 4226's minimum.
const MinTOTPSecret = 16

func (t *TOTP) validate() error {
	switch {
	case len(t.Secret) < MinTOTPSecret:
		return fmt.Errorf("TOTP secret is %d bytes, want at least %d", len(t.Secret), MinTOTPSecret)
	case t.Step < time.Second:
		return fmt.Errorf("TOTP step %v is shorter than a second", t.Step)
	case t.Length < 1 || t.Length > 64:
		return fmt.Errorf("TOTP length %d is not from 1 to 64", t.Length)
	case t.Proto != TCP && t.Proto != UDP:
		return fmt.Errorf("TOTP port range has protocol %v", t.Proto)
	case t.Lo == 0 || t.Hi < t.Lo:
		return fmt.Errorf("TOTP port range %d-%d is empty", t.Lo, t.Hi)
	}
	return nil
}

// totpSteps is the length of the TOTP acceptance window, in steps: a
// sequence is accepted during its own step and the next, for a client
// that knocks across a step boundary or whose clock is a little behind.
// The engine keeps one derived sequence per step of the window
// (totpSnap.slots).
const totpSteps = 2

// AcceptedSteps is the TOTP acceptance window, decided here only: the
// sequence derived for step counter is accepted from the start of step
// first to the end of step last. The engine derives what it matches from
// it (rotate), and the knock client tells its user from it how long a
// sequence stays good.
func (t *TOTP) AcceptedSteps(counter uint64) (first, last uint64) {
	return counter, counter + totpSteps - 1
}

// Counter is the step counter at now.
func (t *TOTP) Counter(now time.Time) uint64 {
	return uint64(now.UnixNano()) / uint64(t.Step)
}

// StepEnds is when the step of counter ends.
func (t *TOTP) StepEnds(counter uint64) time.Time {
	return time.Unix(0, int64((counter+1)*uint64(t.Step)))
}

// Sequence derives the knocks of step counter into dst, which it returns
// resized to Length. Each block of 32 MAC bytes gives eight ports, each
// uint32 mod the range size; the bias of that is below 2^-16 for any range
// of ports.
func (t *TOTP) Sequence(counter uint64, dst []Port) []Port {
	dst = dst[:0]
	size := uint32(t.Hi) - uint32(t.Lo) + 1
	var msg [9]byte
	binary.BigEndian.PutUint64(msg[:8], counter)
	for block := 0; len(dst) < t.Length; block++ {
		msg[8] = byte(block)
		mac := hmac.New(sha256.New, t.Secret)
		mac.Write(msg[:])
		sum := mac.Sum(nil)
		for i := 0; i+4 <= len(sum) && len(dst) < t.Length; i += 4 {
			dst = append(dst, Port{t.Proto, t.Lo + uint16(binary.BigEndian.Uint32(sum[i:])%size)})
		}
	}
	return dst
}

// Contains reports whether p lies in the TOTP port range.
func (t *TOTP) Contains(p Port) bool { return p.Proto == t.Proto && p.Num >= t.Lo && p.Num <= t.Hi }

// totpLive is a TOTP door's sequences as of the latest step, and who
// completed them. Every source's knocks are matched against the same
// sequences, so this is shared by all shards: the sequences are an
// immutable snapshot behind an atomic pointer, read without a lock on
// every knock, and replaced once a step under mu; the used marks, written
// only when a TOTP sequence completes, are under mu too.
type totpLive struct {
	snap atomic.Pointer[totpSnap]
	mu   sync.Mutex
	used [totpSteps]totpUse // per slot
}

// totpSnap is one step's view of a TOTP door. Each door has a slot per
// step of the acceptance window, and step counter n lives in slot
// n%totpSteps: the current step and those before it in the window are
// all accepted, and a slot is derived anew only when its step has left
// the window, so knocks in progress on the previous step survive a
// boundary.
type totpSnap struct {
	cur   uint64 // the step it was derived for
	slots [totpSteps]totpSlot
}

type totpSlot struct {
	ports   []Port
	counter uint64 // the step these ports are for
	// gen counts the slot's derivations, so knocks in progress on an
	// older sequence are recognised (progress.gen); it starts at 1, so a
	// progress entry never matches a slot not yet derived.
	gen uint32
}

// totpUse is who completed a slot's sequence, and for which step.
type totpUse struct {
	counter uint64
	by      key
	set     bool
}

// rotateTOTP brings the sequences of TOTP doors up to the step of now. It
// runs only for packets to knock ports and derives only when a step has
// passed: the HMACs cost nothing per packet, and neither does a lock.
func (c *compiled) rotateTOTP(now time.Time) {
	for i := range c.totp {
		td := &c.totp[i]
		cfg := c.policy.Doors[td.door].TOTP
		cur := cfg.Counter(now)
		if !td.live.snap.Load().current(cur) {
			td.live.rotate(cfg, cur)
		}
	}
}

// current reports whether the snapshot serves step cur. One step ahead
// does: that is a reader whose clock was read a moment before another's,
// at a boundary, and rotating back would re-derive the new step's slot
// from under its knockers. A bigger step back (the wall clock set back)
// does not.
func (sn *totpSnap) current(cur uint64) bool {
	return sn != nil && (sn.cur == cur || sn.cur == cur+1)
}

func (l *totpLive) rotate(cfg *TOTP, cur uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.snap.Load()
	if old.current(cur) {
		return // another reader got here first
	}
	next := &totpSnap{cur: cur}
	if old != nil {
		next.slots = old.slots
	}
	// The steps whose sequences are accepted at cur: cur, and those before
	// it whose window still reaches cur.
	first, last := cfg.AcceptedSteps(cur)
	for i := range last - first + 1 {
		n := cur - (last - first) + i
		if sl := &next.slots[n%totpSteps]; sl.ports == nil || sl.counter != n {
			// A new slice: readers of the old snapshot may still use the
			// old one.
			sl.ports = cfg.Sequence(n, nil)
			sl.counter = n
			sl.gen++
		}
	}
	l.snap.Store(next)
}

// use records that the source by completed slot's sequence of step
// counter, and reports false if another source did so first.
func (l *totpLive) use(slot uint8, counter uint64, by key) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := &l.used[slot]
	if u.set && u.counter == counter {
		return u.by == by
	}
	if !u.set || u.counter < counter {
		*u = totpUse{counter: counter, by: by, set: true}
	}
	return true
}

// knocksOf returns the knocks of sq as they are now, with the TOTP slot's
// generation and step (0 for a fixed sequence).
func (c *compiled) knocksOf(sq *sequence) (knocks []Port, gen uint32, counter uint64) {
	if sq.totp < 0 {
		return sq.ports, 0, 0
	}
	sn := c.totp[sq.totp].live.snap.Load()
	if sn == nil {
		return nil, 0, 0
	}
	sl := &sn.slots[sq.slot]
	return sl.ports, sl.gen, sl.counter
}

// firstSeq finds the sequence that the knock on port num (of protocol
// index pi) starts, or -1, with its knocks, generation and step as
// knocksOf gives them. In a TOTP range, the current step wins should both
// slots start alike.
func (c *compiled) firstSeq(pi int, num uint16) (si int32, knocks []Port, gen uint32, counter uint64) {
	f := c.at[pi][num]
	switch {
	case f > 0:
		return f - 1, c.seqs[f-1].ports, 0, 0
	case f < 0:
		td := &c.totp[-f-1]
		sn := td.live.snap.Load()
		if sn == nil {
			break
		}
		for back := range uint64(totpSteps) {
			j := (sn.cur - back) % totpSteps
			if sl := &sn.slots[j]; sl.ports[0].Num == num {
				return int32(td.slots[j]), sl.ports, sl.gen, sl.counter
			}
		}
	}
	return -1, nil, 0, 0
}
