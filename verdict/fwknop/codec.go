package fwknop

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Payload length limits, in characters (spec §7). fwknopd drops shorter or
// longer payloads silently, before anything else.
const (
	// MinPayloadLen is fwknopd's MIN_SPA_DATA_SIZE.
	MinPayloadLen = 140
	// MaxPayloadLen is one less than libfko's 1500-character limit.
	//
	// fwknopd 2.6.10 also treats payloads of 400 characters or more as GPG
	// and never tries Rijndael on them (spec §7, pitfall 8); the client
	// still builds them, from long port lists with SHA-512 digests. This
	// package decodes them, as the spec recommends.
	MaxPayloadLen = 1499
	// minBodyLen: libfko wants at least 36 characters left once the tag is
	// cut off. A payload Prefilter lets through always has them, whatever
	// the digest (the constant below fails to compile otherwise); only a
	// caller of VerifyHMAC that skips Prefilter can meet a shorter one.
	minBodyLen = 36
)

const _ = uint(MinPayloadLen - maxDigestB64 - minBodyLen)

// Prefilter's errors, built once so that rejecting garbage never
// allocates.
var (
	errTooShort  = fmt.Errorf("%w: shorter than %d characters", ErrMalformed, MinPayloadLen)
	errTooLong   = fmt.Errorf("%w: longer than %d characters", ErrMalformed, MaxPayloadLen)
	errFirstChar = fmt.Errorf("%w: first character is not one of 8 9 + / (it cannot follow the Salted__ header)", ErrMalformed)
	errEquals    = fmt.Errorf("%w: contains '=' (the client never pads; fwknopd's lenient decoder would let it re-key the replay cache)", ErrMalformed)
	errAlphabet  = fmt.Errorf("%w: contains a character outside the base64 alphabet A-Z a-z 0-9 + /", ErrMalformed)
)

// b64Alphabet marks the bytes of the standard base64 alphabet, without '='.
var b64Alphabet = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") {
		t[c] = true
	}
	return t
}()

// Prefilter does the checks that need no keys and no cryptography, so that
// garbage costs a length test and one pass over the bytes, without
// allocating. Decode runs it too; a server may call it first to count
// garbage apart from packets that fail authentication. It checks:
//
//   - the length, MinPayloadLen to MaxPayloadLen (fwknopd's bounds);
//   - that the payload does not begin with the stripped "U2FsdGVkX1"
//     prefix (ErrPrefix; fwknopd drops these, spec §4.4);
//   - that the first character is one of 8 9 + /: the 11th character of
//     every "Salted__" container (spec §4.4). This also turns away GPG
//     payloads ("hQ…"), which this package does not handle;
//   - that every character is in A–Z a–z 0–9 + /. fwknopd also lets '='
//     through, but the client never sends it and it is what lets a
//     packet without an HMAC be replayed under a new cache key (spec §9).
//     Newlines (from a client's -B file) and URL-safe "-_" (HTTP mode,
//     spec §11, which a knockgate server cannot receive) are refused the
//     same way.
func Prefilter(payload []byte) error {
	switch {
	case len(payload) < MinPayloadLen:
		return errTooShort
	case len(payload) > MaxPayloadLen:
		return errTooLong
	case string(payload[:len(saltedPrefix)]) == saltedPrefix:
		return ErrPrefix
	}
	switch payload[0] {
	case '8', '9', '+', '/':
	default:
		return errFirstChar
	}
	for _, c := range payload {
		if !b64Alphabet[c] {
			if c == '=' {
				return errEquals
			}
			return errAlphabet
		}
	}
	return nil
}

// Decode checks and decodes one SPA payload with one door's keys, in
// fwknopd's order (spec §14): Prefilter; the HMAC over "U2FsdGVkX1"+body,
// compared in constant time (ErrHMAC); then the AES decryption, strict
// PKCS#7 padding and the 16-digit check (ErrDecrypt); then the inner
// digest, whose algorithm is found from its length (ErrDigest); then every
// field (ErrFields). It does not check the age (CheckAge) or any policy.
func Decode(payload []byte, keys Keys) (*Message, error) {
	if err := Prefilter(payload); err != nil {
		return nil, err
	}
	if err := keys.Validate(); err != nil {
		return nil, err
	}
	body := payload
	if len(keys.HMAC) > 0 {
		if !VerifyHMAC(payload, keys.HMAC, keys.HMACDigest) {
			return nil, ErrHMAC
		}
		body = payload[:len(payload)-keys.HMACDigest.EncodedLen()]
	}
	pt, err := decrypt(body, &keys)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	m, err := parsePlaintext(pt)
	if err != nil {
		return nil, err
	}
	m.replay = ReplayKey(payload)
	return m, nil
}

// strictB64 refuses non-zero trailing bits, so one ciphertext has exactly
// one text and therefore one replay key. libfko would ignore those bits
// (spec §2); the client never sets them.
var strictB64 = base64.RawStdEncoding.Strict()

// decrypt turns the payload without its tag back into the plaintext
// (spec §4). Its errors are plain; Decode wraps them in ErrDecrypt. Even
// when they are about base64 they are decryption errors: past the HMAC (or
// with no HMAC key) a bad ciphertext means a wrong key, a wrong mode or a
// wrong HMAC type, as with vector n08.
func decrypt(body []byte, k *Keys) ([]byte, error) {
	// The ciphertext text is "U2FsdGVkX1"+body. Rather than copy it, decode
	// it in two parts: the prefix and body's first 2 characters make 12
	// characters, 9 bytes, and the rest of body then starts on a
	// 4-character boundary.
	if len(body) < 2 || (len(saltedPrefix)+len(body))%4 == 1 {
		return nil, errors.New("ciphertext has an impossible base64 length")
	}
	raw := make([]byte, 9+strictB64.DecodedLen(len(body)-2))
	var head [12]byte
	copy(head[:], saltedPrefix)
	copy(head[len(saltedPrefix):], body[:2])
	if _, err := strictB64.Decode(raw[:9], head[:]); err != nil {
		return nil, errors.New("ciphertext is not canonical base64")
	}
	n, err := strictB64.Decode(raw[9:], body[2:])
	if err != nil {
		return nil, errors.New("ciphertext is not canonical base64")
	}
	raw = raw[:9+n]
	if string(raw[:8]) != "Salted__" {
		return nil, errors.New("no Salted__ header")
	}
	if len(raw) < headerLen+16 || len(raw)%16 != 0 {
		return nil, fmt.Errorf("ciphertext is %d bytes, not a positive multiple of 16", len(raw)-headerLen)
	}
	block, iv := newCipher(k, raw[8:headerLen])
	ct := raw[headerLen:]
	crypt(block, k.Mode, iv, ct, false)
	pt, err := unpad(ct)
	if err != nil {
		return nil, err
	}
	// libfko's "did it decrypt?" test.
	if len(pt) <= randomLen || pt[randomLen] != ':' || !allDigits(string(pt[:randomLen])) {
		return nil, errors.New("plaintext does not start with 16 digits and ':'")
	}
	return pt, nil
}

// parsePlaintext checks the inner digest and parses the fields.
func parsePlaintext(pt []byte) (*Message, error) {
	if !printable(pt) {
		return nil, fmt.Errorf("%w: plaintext has a byte that is not printable ASCII", ErrFields)
	}
	if strings.Count(string(pt), ":") < 6 {
		return nil, fmt.Errorf("%w: plaintext has fewer than 7 fields", ErrFields)
	}
	// The digest is computed over everything before the last ':'.
	i := strings.LastIndexByte(string(pt), ':')
	data, dig := pt[:i], pt[i+1:]
	cands := innerDigestCandidates(len(dig))
	if cands == nil {
		return nil, fmt.Errorf("%w: %d characters is the length of no digest", ErrDigest, len(dig))
	}
	var sum [maxDigestSize]byte
	var enc [maxDigestB64]byte
	found := false
	var d Digest
	for _, d = range cands {
		base64.RawStdEncoding.Encode(enc[:], d.sum(&sum, data))
		if subtle.ConstantTimeCompare(enc[:len(dig)], dig) == 1 {
			found = true
			break
		}
	}
	if !found {
		return nil, fmt.Errorf("%w: %s", ErrDigest, cands[0])
	}
	s := string(pt)
	m := &Message{Digest: d, DigestB64: s[i+1:]}
	if err := parseFields(s[:i], m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFields, err)
	}
	return m, nil
}

// errPayloadLen marks an Encode failure caused only by the size of the
// result.
var errPayloadLen = errors.New("the packet would be a size fwknopd drops")

// Encode builds a payload as the fwknop 2.6.10 client would, from explicit
// inputs: the salt here and m's Random and Timestamp. Given a packet's salt,
// random value and timestamp it reproduces the packet byte for byte.
//
// It uses m's Random (16 digits), Username, Timestamp, Version ("3.0.0"
// when empty), Type, Access, NAT, ServerAuth, ClientTimeout and Digest (the
// inner digest). When Access is empty it is built from AllowIP and Ports
// (or Command), and when NAT is empty from NATHost and NATPort. The type is
// taken as given: unlike the client, Encode does not turn a timeout type
// without a timeout into a plain one; it sends the timeout field for types
// 3, 4 and 6 and refuses a timeout for the others. The result is checked
// against the decoder's rules, so Encode never makes a packet Decode
// refuses.
func Encode(m *Message, keys Keys, salt [8]byte) ([]byte, error) {
	if err := keys.Validate(); err != nil {
		return nil, err
	}
	if keys.Mode == Legacy && len(keys.HMAC) > 0 {
		return nil, fmt.Errorf("%w: the fwknop client refuses legacy mode together with an HMAC", ErrKeys)
	}
	if !m.Digest.valid() {
		return nil, fmt.Errorf("%w: unknown inner digest %v", ErrFields, m.Digest)
	}
	data, err := m.encodedData()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFields, err)
	}
	var check Message
	if err := parseFields(data, &check); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFields, err)
	}

	var sum [maxDigestSize]byte
	dig := m.Digest.sum(&sum, []byte(data))
	buf := make([]byte, 0, headerLen+len(data)+1+maxDigestB64+16)
	buf = append(buf, "Salted__"...)
	buf = append(buf, salt[:]...)
	buf = append(buf, data...)
	buf = append(buf, ':')
	buf = base64.RawStdEncoding.AppendEncode(buf, dig)
	buf = pad(buf)
	block, iv := newCipher(&keys, salt[:])
	crypt(block, keys.Mode, iv, buf[headerLen:], true)

	text := base64.RawStdEncoding.AppendEncode(nil, buf)
	out := text[len(saltedPrefix):] // the client drops the fixed prefix
	if len(keys.HMAC) > 0 {
		var t [maxDigestB64]byte
		out = append(out, tag(&t, out, keys.HMAC, keys.HMACDigest)...)
	}
	if err := Prefilter(out); err != nil {
		return nil, fmt.Errorf("%w: %w: %w", ErrFields, errPayloadLen, err)
	}
	return out, nil
}

// encodedData joins fields 1–9 (spec §3.1) without validating them beyond
// what keeps the joining unambiguous; Encode runs the decoder's checks on
// the result.
func (m *Message) encodedData() (string, error) {
	if len(m.Random) != randomLen || !allDigits(m.Random) {
		return "", errors.New("random value is not 16 digits")
	}
	version := m.Version
	if version == "" {
		version = "3.0.0"
	}
	if !printable(version) || strings.Contains(version, ":") {
		return "", errors.New("version is not printable ASCII without ':'")
	}
	if m.Timestamp.IsZero() {
		return "", errors.New("timestamp is not set")
	}
	ts := m.Timestamp.Unix()
	if ts < 0 || ts > maxTimestamp {
		return "", fmt.Errorf("timestamp %d is outside 0 to %d", ts, maxTimestamp)
	}
	if !m.Type.valid() {
		return "", fmt.Errorf("unknown message type %d", m.Type)
	}
	b64 := base64.RawStdEncoding
	var b []byte
	b = append(b, m.Random...)
	b = append(b, ':')
	b = b64.AppendEncode(b, []byte(m.Username))
	b = append(b, ':')
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, ':')
	b = append(b, version...)
	b = append(b, ':')
	b = strconv.AppendUint(b, uint64(m.Type), 10)
	b = append(b, ':')
	b = b64.AppendEncode(b, []byte(m.accessText()))
	if nat := m.natText(); m.Type.HasNAT() {
		b = append(b, ':')
		b = b64.AppendEncode(b, []byte(nat))
	} else if nat != "" {
		return "", fmt.Errorf("a type %d message has no NAT field", m.Type)
	}
	if m.ServerAuth != "" {
		b = append(b, ':')
		b = b64.AppendEncode(b, []byte(m.ServerAuth))
	}
	if m.Type.HasTimeout() {
		b = append(b, ':')
		b = strconv.AppendUint(b, uint64(m.ClientTimeout), 10)
	} else if m.ClientTimeout != 0 {
		return "", fmt.Errorf("a type %d message has no client timeout; use type 3, 4 or 6", m.Type)
	}
	return string(b), nil
}

func (m *Message) accessText() string {
	if m.Access != "" || !m.AllowIP.IsValid() {
		return m.Access
	}
	var b strings.Builder
	b.WriteString(m.AllowIP.String())
	if m.Type == TypeCommand {
		b.WriteString(",")
		b.WriteString(m.Command)
		return b.String()
	}
	for _, p := range m.Ports {
		b.WriteString(",")
		b.WriteString(p.String())
	}
	return b.String()
}

func (m *Message) natText() string {
	if m.NAT != "" || m.NATHost == "" {
		return m.NAT
	}
	return m.NATHost + "," + strconv.Itoa(int(m.NATPort))
}

// EncodeRandom is Encode with the salt, and the random value when m has
// none, read from rand (crypto/rand.Reader in a client). It does not
// change m. The timestamp must be set: this package reads no clock.
func EncodeRandom(m *Message, keys Keys, rand io.Reader) ([]byte, error) {
	var salt [saltLen]byte
	if _, err := io.ReadFull(rand, salt[:]); err != nil {
		return nil, fmt.Errorf("failed to read the salt: %w", err)
	}
	mm := *m
	if mm.Random == "" {
		r, err := randomDigits(rand)
		if err != nil {
			return nil, err
		}
		mm.Random = r
	}
	return Encode(&mm, keys, salt)
}

// randomDigits returns 16 uniform decimal digits. The client concatenates
// rand() outputs instead; only the form matters to a server.
func randomDigits(rand io.Reader) (string, error) {
	var out [randomLen]byte
	var buf [32]byte
	n := 0
	for n < len(out) {
		if _, err := io.ReadFull(rand, buf[:]); err != nil {
			return "", fmt.Errorf("failed to read the random value: %w", err)
		}
		for _, c := range buf {
			if c < 250 && n < len(out) { // 250 = 25×10: no modulo bias
				out[n] = '0' + c%10
				n++
			}
		}
	}
	return string(out[:]), nil
}
