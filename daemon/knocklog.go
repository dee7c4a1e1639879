package daemon

import (
	"net/netip"
	"sync"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// Why a knock failed, at info level: one line per source and door per
// knockLogEvery, with the reason as a word, so an operator whose knock
// did not open sees why without debug logging (which keeps every packet).
// A flood of spoofed sources must neither fill memory nor the log: the
// limiter is a fixed table of recent (source, door) pairs, and a token
// bucket bounds the lines of all sources together.

const (
	// knockLogEvery is how often one source's failures at one door are
	// logged.
	knockLogEvery = time.Minute
	// knockLogSlots is the size of the table of pairs logged recently; a
	// pair that hashes to a slot another pair took since is logged again
	// early, which is harmless.
	knockLogSlots = 1024
	// knockLogBurst lines at once, refilled at knockLogRate per second,
	// across every source.
	knockLogBurst = 20
	knockLogRate  = 5
)

// failureWord is why dec refused or reset a knock sequence, as a word for
// the log, or "" if it did neither.
func failureWord(dec verdict.Decision) (word, door string) {
	switch dec.Reason {
	case verdict.ReasonKnockWrong:
		return "wrong_port", dec.DoorName
	case verdict.ReasonNotAllowed:
		return "not_allowed", dec.DoorName
	case verdict.ReasonPenalized:
		return "banned", dec.DoorName
	}
	if dec.Reset != verdict.NoDoor {
		if dec.ResetTimedOut {
			return "timeout", dec.ResetName
		}
		return "wrong_port", dec.ResetName
	}
	return "", ""
}

// knockLimiter decides which failure lines to log. Its table and bucket
// are allocated once; allow never allocates.
type knockLimiter struct {
	mu     sync.Mutex
	slots  [knockLogSlots]knockLogSlot
	tokens float64
	filled int64 // when tokens was last refilled, Unix nanoseconds
}

type knockLogSlot struct {
	src        [16]byte
	doorHash   uint64
	last       int64  // when the pair was last logged, Unix nanoseconds
	suppressed uint32 // failures not logged since
}

// allow reports whether a failure of src at door, at now, is logged, and
// how many of the pair's failures were left out since its last line.
func (l *knockLimiter) allow(src netip.Addr, door string, now time.Time) (bool, uint32) {
	a := src.As16()
	dh := fnv64(door)
	h := dh
	for _, b := range a {
		h = (h ^ uint64(b)) * 1099511628211
	}
	// FNV's low bits mix poorly; the slot index needs them mixed.
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	t := now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	s := &l.slots[h%knockLogSlots]
	mine := s.last != 0 && s.src == a && s.doorHash == dh
	if mine && t-s.last < int64(knockLogEvery) {
		s.suppressed++
		return false, 0
	}
	l.tokens = min(knockLogBurst, l.tokens+float64(t-l.filled)/float64(time.Second)*knockLogRate)
	if l.filled == 0 {
		l.tokens = knockLogBurst
	}
	l.filled = t
	if l.tokens < 1 {
		return false, 0
	}
	l.tokens--
	var left uint32
	if mine {
		left = s.suppressed
	}
	*s = knockLogSlot{src: a, doorHash: dh, last: t}
	return true, left
}

// fnv64 is FNV-1a over s, without the allocation of hash/fnv.
func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * 1099511628211
	}
	return h
}

// logFailure logs why a knock failed, if the limiter allows.
func (d *Daemon) logFailure(p verdict.Packet, dec verdict.Decision) {
	word, door := failureWord(dec)
	if word == "" {
		return
	}
	ok, left := d.knockLog.allow(p.Src, door, time.Now())
	if !ok {
		return
	}
	attrs := []any{"source", p.Src.String(), "reason", word, "packet", verdict.Port{Proto: p.Proto, Num: p.DstPort}.String()}
	if door != "" {
		// A knock port that starts no sequence names no door.
		attrs = append([]any{"door", door}, attrs...)
	}
	if left > 0 {
		attrs = append(attrs, "suppressed", left)
	}
	d.log.Info("knock failed", attrs...)
}
