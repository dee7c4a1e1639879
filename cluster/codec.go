package cluster

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// Wire format, version 1. All integers are big-endian or varints
// (encoding/binary); times are Unix nanoseconds, the message's own as a
// fixed int64 and each fact's as a signed varint offset from it, which
// keeps a grant opened about when it was sent to a few bytes.
//
//	header:  "KG" version(1) kind(1) sent(int64) policy(8) sender(str)
//	body:    five sections in order: grants, revokes, replays, totp, bans;
//	         each a uvarint count and that many facts
//	grant:   door(str) source(addr) opened(t) until(t) origin(str) ports
//	revoke:  door(str) source(addr) at(t) until(t)
//	replay:  digest(20) until(t)
//	totp:    door(str) step(uvarint) source(addr) until(t)
//	ban:     source(addr) until(t)
//	str:     length(1) bytes, 1..MaxName
//	addr:    length(1: 4 or 16) bytes
//	ports:   count(uvarint, 0 = all the door's ports) then proto(1) num(2)
//	         each, strictly ascending
//
// A decoder refuses a message with another magic or version, a length
// beyond its kind's limit, counts the remaining bytes cannot hold, anything
// out of range, or trailing bytes.
const (
	// Version is the wire format's version.
	Version = 1
	// MaxName is the longest node or door name on the wire.
	MaxName = 64
	// MaxUpdateBytes is the largest update message: far above one
	// change's facts, small enough for a peer to hold several in flight.
	MaxUpdateBytes = 64 << 10
	// MaxStateBytes is the largest full-state message. memberlist refuses
	// push/pull state beyond 20 MiB in all; at 25 to 40 bytes a fact, 16
	// MiB holds some 400,000 (BenchmarkFullState).
	MaxStateBytes = 16 << 20
)

// Kind says what a message holds.
type Kind uint8

// Message kinds.
const (
	// KindUpdate is a local change, sent directly to every peer.
	KindUpdate Kind = 1
	// KindState is a gateway's whole state, sent on push/pull.
	KindState Kind = 2
)

func (k Kind) limit() int {
	if k == KindState {
		return MaxStateBytes
	}
	return MaxUpdateBytes
}

// PolicyHash identifies a gateway's policy, so that peers whose policies
// differ can be told apart; it is not a security measure.
type PolicyHash [8]byte

// HashPolicy returns the PolicyHash of a policy's canonical bytes.
func HashPolicy(b []byte) PolicyHash {
	s := sha256.Sum256(b)
	return PolicyHash(s[:8])
}

// Message is what gateways send each other.
type Message struct {
	Kind   Kind
	Sender string
	// Sent is when the sender encoded it, by the sender's clock: it bounds
	// staleness and measures propagation and clock skew.
	Sent   time.Time
	Policy PolicyHash
	Update Update
}

// Errors from DecodeMessage, for counting refusals by reason.
var (
	ErrMalformed = errors.New("malformed cluster message")
	ErrTooLarge  = errors.New("cluster message too large")
	ErrVersion   = errors.New("unsupported cluster message version")
)

var magic = [2]byte{'K', 'G'}

const headerLen = 2 + 1 + 1 + 8 + 8 + 1

// AppendMessage appends m's encoding to dst. It refuses a message that
// DecodeMessage would refuse: names empty or longer than MaxName,
// addresses that are invalid or have a zone, ports unsorted or more than
// verdict.MaxOpenPorts, or an encoding beyond the kind's size limit.
func AppendMessage(dst []byte, m *Message) ([]byte, error) {
	if m.Kind != KindUpdate && m.Kind != KindState {
		return dst, fmt.Errorf("failed to encode cluster message: unknown kind %d", m.Kind)
	}
	start := len(dst)
	e := encoder{b: dst, base: m.Sent.UnixNano()}
	e.b = append(e.b, magic[0], magic[1], Version, byte(m.Kind))
	e.b = binary.BigEndian.AppendUint64(e.b, uint64(e.base))
	e.b = append(e.b, m.Policy[:]...)
	e.str(m.Sender)
	u := &m.Update
	e.b = binary.AppendUvarint(e.b, uint64(len(u.Grants)))
	for i := range u.Grants {
		g := &u.Grants[i]
		e.str(g.Door)
		e.addr(g.Source)
		e.time(g.Opened)
		e.time(g.Until)
		e.str(g.Origin)
		e.ports(g.Ports)
	}
	e.b = binary.AppendUvarint(e.b, uint64(len(u.Revokes)))
	for i := range u.Revokes {
		r := &u.Revokes[i]
		e.str(r.Door)
		e.addr(r.Source)
		e.time(r.At)
		e.time(r.Until)
	}
	e.b = binary.AppendUvarint(e.b, uint64(len(u.Replays)))
	for i := range u.Replays {
		e.b = append(e.b, u.Replays[i].Digest[:]...)
		e.time(u.Replays[i].Until)
	}
	e.b = binary.AppendUvarint(e.b, uint64(len(u.TOTP)))
	for i := range u.TOTP {
		x := &u.TOTP[i]
		e.str(x.Door)
		e.b = binary.AppendUvarint(e.b, x.Step)
		e.addr(x.Source)
		e.time(x.Until)
	}
	e.b = binary.AppendUvarint(e.b, uint64(len(u.Bans)))
	for i := range u.Bans {
		e.addr(u.Bans[i].Source)
		e.time(u.Bans[i].Until)
	}
	if e.err != nil {
		return dst, fmt.Errorf("failed to encode cluster message: %w", e.err)
	}
	if n := len(e.b) - start; n > m.Kind.limit() {
		return dst, fmt.Errorf("failed to encode cluster message: %d bytes, more than %d: %w", n, m.Kind.limit(), ErrTooLarge)
	}
	return e.b, nil
}

type encoder struct {
	b    []byte
	base int64
	err  error
}

func (e *encoder) fail(format string, args ...any) {
	if e.err == nil {
		e.err = fmt.Errorf(format, args...)
	}
}

func (e *encoder) str(s string) {
	if len(s) == 0 || len(s) > MaxName {
		e.fail("name %q is empty or longer than %d bytes", s, MaxName)
		return
	}
	e.b = append(e.b, byte(len(s)))
	e.b = append(e.b, s...)
}

func (e *encoder) addr(a netip.Addr) {
	if !a.IsValid() || a.Zone() != "" {
		e.fail("address %v is invalid or has a zone", a)
		return
	}
	s := a.AsSlice()
	e.b = append(e.b, byte(len(s)))
	e.b = append(e.b, s...)
}

func (e *encoder) time(t time.Time) {
	e.b = binary.AppendVarint(e.b, t.UnixNano()-e.base)
}

func (e *encoder) ports(ps []verdict.Port) {
	if len(ps) > verdict.MaxOpenPorts {
		e.fail("%d ports, more than %d", len(ps), verdict.MaxOpenPorts)
		return
	}
	e.b = binary.AppendUvarint(e.b, uint64(len(ps)))
	for i, p := range ps {
		if i > 0 && comparePorts(ps[i-1], p) >= 0 {
			e.fail("ports %v are not sorted without duplicates", ps)
			return
		}
		e.b = append(e.b, byte(p.Proto))
		e.b = binary.BigEndian.AppendUint16(e.b, p.Num)
	}
}

// Smallest encodings of each fact, so a count is checked against the bytes
// left before anything is allocated for it.
const (
	minGrant  = 2 + 5 + 1 + 1 + 2 + 1
	minRevoke = 2 + 5 + 1 + 1
	minReplay = 20 + 1
	minTOTP   = 2 + 1 + 5 + 1
	minBan    = 5 + 1
)

// DecodeMessage decodes one message. Errors wrap ErrMalformed, ErrTooLarge
// or ErrVersion. It never panics, and allocates in proportion to len(b).
func DecodeMessage(b []byte) (Message, error) {
	var m Message
	if len(b) < headerLen {
		return m, fmt.Errorf("%w: %d bytes, shorter than a header", ErrMalformed, len(b))
	}
	if b[0] != magic[0] || b[1] != magic[1] {
		return m, fmt.Errorf("%w: bad magic %q", ErrMalformed, b[:2])
	}
	if b[2] != Version {
		return m, fmt.Errorf("%w: version %d, want %d", ErrVersion, b[2], Version)
	}
	m.Kind = Kind(b[3])
	if m.Kind != KindUpdate && m.Kind != KindState {
		return m, fmt.Errorf("%w: unknown kind %d", ErrMalformed, b[3])
	}
	if len(b) > m.Kind.limit() {
		return m, fmt.Errorf("%w: %d bytes, more than %d", ErrTooLarge, len(b), m.Kind.limit())
	}
	d := decoder{b: b[4:]}
	d.base = int64(d.u64())
	m.Sent = unixUTC(d.base)
	copy(m.Policy[:], d.take(len(m.Policy)))
	m.Sender = d.str()
	u := &m.Update
	if n := d.count(minGrant); n > 0 {
		u.Grants = make([]Grant, n)
		for i := range u.Grants {
			g := &u.Grants[i]
			g.Door, g.Source = d.str(), d.addr()
			g.Opened, g.Until = d.time(), d.time()
			g.Origin = d.str()
			g.Ports = d.ports()
		}
	}
	if n := d.count(minRevoke); n > 0 {
		u.Revokes = make([]Revoke, n)
		for i := range u.Revokes {
			r := &u.Revokes[i]
			r.Door, r.Source = d.str(), d.addr()
			r.At, r.Until = d.time(), d.time()
		}
	}
	if n := d.count(minReplay); n > 0 {
		u.Replays = make([]Replay, n)
		for i := range u.Replays {
			copy(u.Replays[i].Digest[:], d.take(20))
			u.Replays[i].Until = d.time()
		}
	}
	if n := d.count(minTOTP); n > 0 {
		u.TOTP = make([]TOTPUse, n)
		for i := range u.TOTP {
			x := &u.TOTP[i]
			x.Door, x.Step = d.str(), d.uvarint()
			x.Source, x.Until = d.addr(), d.time()
		}
	}
	if n := d.count(minBan); n > 0 {
		u.Bans = make([]Ban, n)
		for i := range u.Bans {
			u.Bans[i].Source, u.Bans[i].Until = d.addr(), d.time()
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return Message{}, fmt.Errorf("%w: %w", ErrMalformed, d.err)
	}
	return m, nil
}

// decoder reads from b; after the first error every read returns zero
// values, so DecodeMessage checks once at the end.
type decoder struct {
	b    []byte
	base int64
	err  error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
	d.b = nil
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return make([]byte, n)
	}
	if len(d.b) < n {
		d.fail("truncated: want %d bytes, have %d", n, len(d.b))
		return make([]byte, n)
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) u64() uint64 { return binary.BigEndian.Uint64(d.take(8)) }

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) time() time.Time {
	if d.err != nil {
		return time.Time{}
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return time.Time{}
	}
	d.b = d.b[n:]
	return unixUTC(d.base + v)
}

// count reads a section's count and checks that what is left could hold
// that many facts of at least size bytes each.
func (d *decoder) count(size int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.b)/size) {
		d.fail("count %d cannot fit in %d bytes", n, len(d.b))
		return 0
	}
	return int(n)
}

func (d *decoder) str() string {
	n := int(d.take(1)[0])
	if d.err == nil && (n == 0 || n > MaxName) {
		d.fail("name of %d bytes, want 1 to %d", n, MaxName)
	}
	if d.err != nil {
		return ""
	}
	return string(d.take(n))
}

func (d *decoder) addr() netip.Addr {
	n := int(d.take(1)[0])
	if d.err != nil {
		return netip.Addr{}
	}
	switch n {
	case 4:
		return netip.AddrFrom4([4]byte(d.take(4)))
	case 16:
		return netip.AddrFrom16([16]byte(d.take(16)))
	}
	d.fail("address of %d bytes", n)
	return netip.Addr{}
}

func (d *decoder) ports() []verdict.Port {
	n := d.uvarint()
	if d.err != nil || n == 0 {
		return nil
	}
	if n > verdict.MaxOpenPorts || n > uint64(len(d.b)/3) {
		d.fail("%d ports", n)
		return nil
	}
	ps := make([]verdict.Port, n)
	for i := range ps {
		b := d.take(3)
		ps[i] = verdict.Port{Proto: verdict.Proto(b[0]), Num: binary.BigEndian.Uint16(b[1:])}
		if i > 0 && comparePorts(ps[i-1], ps[i]) >= 0 {
			d.fail("ports not sorted without duplicates")
			return nil
		}
	}
	return ps
}
