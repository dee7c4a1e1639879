package fwknop

import (
	"encoding/base64"
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

// The seed corpora are in testdata/fuzz/: FuzzDecode has the 41 vector
// packets, FuzzPlaintext their plaintexts without the inner digest.

// FuzzDecode feeds raw payloads to Decode with fixed keys, with and
// without an HMAC key (the latter reaches the decryption on every input
// that passes Prefilter). Decode must never panic, must fail with a stage
// sentinel, and whatever it accepts must survive a re-encode.
func FuzzDecode(f *testing.F) {
	keys := []Keys{k1(), {Enc: []byte("rijndael-pass-v1"), AllowNoHMAC: true}}
	f.Fuzz(func(t *testing.T, payload []byte) {
		for _, k := range keys {
			m, err := Decode(payload, k)
			if err != nil {
				if m != nil || stage(err) == 0 {
					t.Fatalf("Decode = %v, %v: no message and a stage sentinel wanted", m, err)
				}
				continue
			}
			checkMessage(t, m)
			checkReencode(t, m, k, saltOf(payload))
		}
	})
}

// FuzzPlaintext fuzzes everything past the cryptography: it seals the
// fuzzed fields (with a correct inner digest chosen by sel) with real keys,
// so that every input reaches the field parser.
func FuzzPlaintext(f *testing.F) {
	k := k1()
	f.Fuzz(func(t *testing.T, data []byte, sel uint8) {
		d := Digest(sel % uint8(numDigests))
		var sum [maxDigestSize]byte
		pt := append(append(data[:len(data):len(data)], ':'), base64.RawStdEncoding.EncodeToString(d.sum(&sum, data))...)
		payload := sealPlaintext(pt, &k, testSalt)
		if Prefilter(payload) != nil {
			return
		}
		m, err := Decode(payload, k)
		if err != nil {
			if m != nil || stage(err) < 3 {
				t.Fatalf("Decode = %v, %v: want a decryption or later error", m, err)
			}
			return
		}
		checkMessage(t, m)
		checkReencode(t, m, k, testSalt)
	})
}

// FuzzPrefilter checks Prefilter against a plain restatement of its rules.
func FuzzPrefilter(f *testing.F) {
	f.Add([]byte(v01))
	f.Add([]byte(v01 + "="))
	f.Add([]byte(saltedPrefix + v01))
	f.Fuzz(func(t *testing.T, p []byte) {
		ok := len(p) >= MinPayloadLen && len(p) <= MaxPayloadLen &&
			(p[0] == '8' || p[0] == '9' || p[0] == '+' || p[0] == '/')
		if ok {
			_, err := base64.RawStdEncoding.DecodeString(string(p[:len(p)/4*4]))
			ok = err == nil
			for _, c := range p {
				if c == '\r' || c == '\n' || c == '=' {
					ok = false // the Go decoder skips newlines; Prefilter must not
				}
			}
			for _, c := range p[len(p)/4*4:] {
				if !b64Alphabet[c] {
					ok = false
				}
			}
		}
		if err := Prefilter(p); ok != (err == nil) || err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("Prefilter(%q) = %v, want ok=%v", p, err, ok)
		}
	})
}

// saltOf returns the salt of a payload that decoded.
func saltOf(payload []byte) [8]byte {
	raw, _ := base64.RawStdEncoding.DecodeString(saltedPrefix + string(payload[:14]))
	var s [8]byte
	copy(s[:], raw[8:16])
	return s
}

// checkMessage asserts what Decode promises of a message it returns.
func checkMessage(t *testing.T, m *Message) {
	t.Helper()
	ok := len(m.Random) == randomLen && allDigits(m.Random) &&
		m.Type.valid() && m.Digest.valid() && m.Username != "" &&
		(m.AllowIP.Is4() || m.AllowIP.Is6() && !m.AllowIP.Is4In6() && m.AllowIP.Zone() == "" && !m.AllowIP.IsUnspecified()) && m.Access != "" &&
		(m.Type == TypeCommand) == (m.Command != "") &&
		(m.Type == TypeCommand) == (len(m.Ports) == 0) &&
		m.Type.HasNAT() == (m.NAT != "") && (m.NATHost != "") == (m.NAT != "") && (m.NATPort != 0) == (m.NAT != "") &&
		(m.Type.HasTimeout() || m.ClientTimeout == 0) && m.ClientTimeout <= maxClientTimout &&
		m.Timestamp.Unix() >= 0 && m.Timestamp.Unix() <= maxTimestamp
	for _, p := range m.Ports {
		ok = ok && (p.Proto == ProtoTCP || p.Proto == ProtoUDP) && p.Num != 0
	}
	if !ok || m.AllowIP == (netip.Addr{}) {
		t.Fatalf("Decode returned an inconsistent message %+v", m)
	}
}

// checkReencode encodes a decoded message again: the result must decode to
// the same message. Not always to the same bytes, nor the same inner
// digest: libfko's field parsing is lenient (leading zeros, base64
// trailing bits, '=' inside fields) and Encode writes canonical text.
func checkReencode(t *testing.T, m *Message, k Keys, salt [8]byte) {
	t.Helper()
	out, err := Encode(m, k, salt)
	if errors.Is(err, errPayloadLen) {
		return // canonical text can be shorter than the original
	}
	if err != nil {
		t.Fatalf("Encode(decoded %+v) = %v", m, err)
	}
	m2, err := Decode(out, k)
	if err != nil {
		t.Fatalf("Decode(Encode(m)) = %v", err)
	}
	m2.replay, m2.DigestB64 = m.replay, m.DigestB64
	if !reflect.DeepEqual(m, m2) {
		t.Fatalf("re-encoded message differs:\n %+v\n %+v", m, m2)
	}
}

// stage ranks an error by how far decoding got: 0 for an error that wraps
// none of the stage sentinels.
func stage(err error) int {
	switch {
	case errors.Is(err, ErrFields), errors.Is(err, ErrDigest):
		return 4
	case errors.Is(err, ErrDecrypt):
		return 3
	case errors.Is(err, ErrHMAC):
		return 2
	case errors.Is(err, ErrMalformed):
		return 1
	}
	return 0
}
