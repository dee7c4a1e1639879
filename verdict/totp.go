package verdict

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"
)

// TOTP makes a door's knock sequence a function of a shared secret and the
// time, in the manner of RFC 6238: the step counter T = unix time / Step is
// the HMAC-SHA256 message, and the ports come from the MAC. A sniffed
// sequence is worthless once its step (and the one after, which is still
// accepted for clients that straddle a boundary) has passed.
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

// rotateTOTP brings the sequences of TOTP doors up to the step of now. Each
// door has two slots, and step counter n lives in slot n%2: the current and
// the previous step are both accepted, and a slot is derived anew only
// when its step is two behind, so knocks in progress on the previous step
// survive a boundary. The first knock table points at both, the current
// one winning should both start alike. It runs only for packets to knock
// ports and derives only when a step has passed: the HMACs cost nothing per
// packet.
func (e *Engine) rotateTOTP(now time.Time) {
	c := e.c
	for _, td := range c.totp {
		cfg := c.policy.Doors[td.door].TOTP
		cur := cfg.Counter(now)
		changed := false
		for _, n := range [2]uint64{cur - 1, cur} {
			si := td.slots[n%2]
			if s := &c.seqs[si]; s.ports == nil || s.counter != n {
				e.unhook(cfg, si)
				s.ports = cfg.Sequence(n, s.ports)
				s.counter = n
				s.gen++
				s.used = false
				changed = true
			}
		}
		if changed {
			pi := protoIndex(cfg.Proto)
			for _, n := range [2]uint64{cur - 1, cur} {
				si := td.slots[n%2]
				c.first[pi][c.seqs[si].ports[0].Num] = int32(si + 1)
			}
		}
	}
}

// unhook removes a slot's first knock from the first knock table.
func (e *Engine) unhook(cfg *TOTP, si int) {
	s := &e.c.seqs[si]
	if s.ports == nil {
		return
	}
	pi := protoIndex(cfg.Proto)
	if e.c.first[pi][s.ports[0].Num] == int32(si+1) {
		e.c.first[pi][s.ports[0].Num] = 0
	}
}
