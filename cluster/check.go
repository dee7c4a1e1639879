package cluster

import (
	"errors"
	"time"
)

// Reason is why a message or a fact from a peer was refused. The values
// are a closed set, for a metric's reason label.
type Reason uint8

// Reasons for refusing.
const (
	// ReasonMalformed: the message did not decode.
	ReasonMalformed Reason = iota
	// ReasonTooLarge: the message exceeded its kind's size limit.
	ReasonTooLarge
	// ReasonVersion: another wire format version.
	ReasonVersion
	// ReasonStale: sent longer ago than Limits.MaxAge (a replay, or a
	// clock far behind).
	ReasonStale
	// ReasonFuture: sent more than Limits.MaxAge ahead of our clock.
	ReasonFuture
	// ReasonSelf: a message that names this gateway as its sender.
	ReasonSelf
	// ReasonUnknownDoor: a fact for a door this gateway does not have.
	ReasonUnknownDoor
	// ReasonTooLong: a fact lasting longer than this gateway's policy
	// allows (a grant beyond the door's longest, a ban beyond MaxBan...).
	ReasonTooLong
	// ReasonExpired: a fact that had already expired on arrival.
	ReasonExpired
	// ReasonDuplicate: an update message that changed nothing (sent
	// twice, or replayed within MaxAge).
	ReasonDuplicate
	// NumReasons is the number of reasons, for arrays indexed by Reason.
	NumReasons
)

var reasonNames = [NumReasons]string{"malformed", "too_large", "version", "stale", "future", "self",
	"unknown_door", "too_long", "expired", "duplicate"}

func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// FactKind is a kind of shared fact, for a metric's kind label.
type FactKind uint8

// Kinds of facts.
const (
	FactGrant FactKind = iota
	FactRevoke
	FactReplay
	FactTOTP
	FactBan
	// NumFactKinds is the number of kinds, for arrays indexed by FactKind.
	NumFactKinds
)

var factNames = [NumFactKinds]string{"grant", "revoke", "replay", "totp", "ban"}

func (k FactKind) String() string {
	if k < NumFactKinds {
		return factNames[k]
	}
	return "unknown"
}

// Limits are what this gateway accepts from peers: a peer may only add
// state that this gateway's own policy could have made.
type Limits struct {
	// Door returns a door's longest grant (its open_for, or its SPA
	// max_open_for if longer), and whether this gateway has the door.
	// Nil refuses every fact that names a door.
	Door func(door string) (maxOpen time.Duration, ok bool)
	// MaxAge is how far a message's timestamp may be from our clock,
	// either way; 0 means DefaultMaxAge.
	MaxAge time.Duration
	// MaxReplay, MaxTOTP and MaxBan bound how far ahead a replay digest,
	// a TOTP use or a ban may expire; 0 means the defaults below.
	MaxReplay time.Duration
	MaxTOTP   time.Duration
	MaxBan    time.Duration
}

// Defaults for Limits.
const (
	// DefaultMaxAge is far above a LAN's delay and a synchronised clock's
	// error, and short enough that a recorded message replayed later is
	// refused.
	DefaultMaxAge = 10 * time.Second
	// DefaultMaxReplay covers an SPA packet's max_age either side of now.
	DefaultMaxReplay = time.Hour
	// DefaultMaxTOTP covers the two steps a TOTP sequence is accepted in.
	DefaultMaxTOTP = time.Hour
	// DefaultMaxBan is far above the default penalty ban (10 minutes).
	DefaultMaxBan = 24 * time.Hour
)

func (l Limits) withDefaults() Limits {
	if l.MaxAge <= 0 {
		l.MaxAge = DefaultMaxAge
	}
	if l.MaxReplay <= 0 {
		l.MaxReplay = DefaultMaxReplay
	}
	if l.MaxTOTP <= 0 {
		l.MaxTOTP = DefaultMaxTOTP
	}
	if l.MaxBan <= 0 {
		l.MaxBan = DefaultMaxBan
	}
	return l
}

func decodeReason(err error) Reason {
	switch {
	case errors.Is(err, ErrTooLarge):
		return ReasonTooLarge
	case errors.Is(err, ErrVersion):
		return ReasonVersion
	}
	return ReasonMalformed
}

// checkSent refuses a message sent too far from now, either way.
func (l *Limits) checkSent(sent, now time.Time) (Reason, bool) {
	switch d := now.Sub(sent); {
	case d > l.MaxAge:
		return ReasonStale, false
	case d < -l.MaxAge:
		return ReasonFuture, false
	}
	return 0, true
}

// filter removes from u, in place, the facts this gateway refuses, calling
// refused for each, and calls accepted for each kept.
func (l *Limits) filter(u *Update, now time.Time, refused func(Reason), accepted func(FactKind)) {
	door := func(name string) (time.Duration, bool) {
		if l.Door == nil {
			return 0, false
		}
		return l.Door(name)
	}
	// A fact may expire at most its limit plus MaxAge after now: a peer
	// stamps its facts with its own clock, which may be MaxAge ahead.
	keep := func(k FactKind, until time.Time, limit time.Duration) bool {
		switch {
		case !until.After(now):
			refused(ReasonExpired)
			return false
		case until.Sub(now) > limit+l.MaxAge:
			refused(ReasonTooLong)
			return false
		}
		accepted(k)
		return true
	}
	u.Grants = filterSlice(u.Grants, func(g *Grant) bool {
		maxOpen, ok := door(g.Door)
		if !ok {
			refused(ReasonUnknownDoor)
			return false
		}
		if g.Until.Sub(g.Opened) > maxOpen {
			refused(ReasonTooLong)
			return false
		}
		return keep(FactGrant, g.Until, maxOpen)
	})
	u.Revokes = filterSlice(u.Revokes, func(r *Revoke) bool {
		maxOpen, ok := door(r.Door)
		if !ok {
			refused(ReasonUnknownDoor)
			return false
		}
		return keep(FactRevoke, r.Until, maxOpen)
	})
	u.Replays = filterSlice(u.Replays, func(r *Replay) bool { return keep(FactReplay, r.Until, l.MaxReplay) })
	u.TOTP = filterSlice(u.TOTP, func(x *TOTPUse) bool {
		if _, ok := door(x.Door); !ok {
			refused(ReasonUnknownDoor)
			return false
		}
		return keep(FactTOTP, x.Until, l.MaxTOTP)
	})
	u.Bans = filterSlice(u.Bans, func(b *Ban) bool { return keep(FactBan, b.Until, l.MaxBan) })
}

func filterSlice[T any](s []T, ok func(*T) bool) []T {
	out := s[:0]
	for i := range s {
		if ok(&s[i]) {
			out = append(out, s[i])
		}
	}
	return out
}
