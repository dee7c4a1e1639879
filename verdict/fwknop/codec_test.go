package fwknop

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// k1 are the spec's keys K1 (§13).
func k1() Keys {
	return Keys{Enc: []byte("rijndael-pass-v1"), HMAC: []byte("hmac-pass-v1")}
}

// sealPlaintext encrypts and tags any plaintext as the client would, with
// no checks, so that tests can feed Decode plaintexts the client would
// never build.
func sealPlaintext(pt []byte, k *Keys, salt [8]byte) []byte {
	buf := append([]byte("Salted__"), salt[:]...)
	buf = pad(append(buf, pt...))
	block, iv := newCipher(k, salt[:])
	crypt(block, k.Mode, iv, buf[headerLen:], true)
	out := []byte(base64.RawStdEncoding.EncodeToString(buf)[len(saltedPrefix):])
	if len(k.HMAC) > 0 {
		var t [maxDigestB64]byte
		out = append(out, tag(&t, out, k.HMAC, k.HMACDigest)...)
	}
	return out
}

// withDigest appends the inner SHA-256 digest to encoded data.
func withDigest(data string) string {
	var sum [maxDigestSize]byte
	return data + ":" + base64.RawStdEncoding.EncodeToString(SHA256.sum(&sum, []byte(data)))
}

// flip changes a base64 character to its neighbour in the low bit.
func flip(c byte) string {
	const a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	return string(a[strings.IndexByte(a, c)^1])
}

func b64(s string) string { return base64.RawStdEncoding.EncodeToString([]byte(s)) }

var testSalt = [8]byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4}

// TestKeyDerivationKAT checks the two OpenSSL known answers of spec §4.2
// and §4.3 (the spec gives the first and last 4 bytes of each).
func TestKeyDerivationKAT(t *testing.T) {
	for _, tc := range []struct {
		pass, salt                       string
		legacy                           bool
		keyHead, keyTail, ivHead, ivTail string
	}{
		{"rijndael-pass-v1", "4c50a4f220cd59bd", false, "28f5b90b", "b3e96e09", "09121a22", "d746d31f"},
		{"shortkey", "ca29baa236267803", true, "f73f5ef3", "c3daf1", "0a3b6577", "141b0a"},
	} {
		salt, _ := hex.DecodeString(tc.salt)
		pass := []byte(tc.pass)
		if tc.legacy {
			var lb [16]byte
			pass = legacyPass(pass, &lb)
			if string(pass) != "shortkey00000000" {
				t.Errorf("legacy passphrase = %q, want shortkey00000000", pass)
			}
		}
		key, iv := deriveKeyIV(pass, salt)
		k, v := hex.EncodeToString(key[:]), hex.EncodeToString(iv[:])
		if !strings.HasPrefix(k, tc.keyHead) || !strings.HasSuffix(k, tc.keyTail) {
			t.Errorf("%s: key = %s, want %s…%s", tc.pass, k, tc.keyHead, tc.keyTail)
		}
		if !strings.HasPrefix(v, tc.ivHead) || !strings.HasSuffix(v, tc.ivTail) {
			t.Errorf("%s: iv = %s, want %s…%s", tc.pass, v, tc.ivHead, tc.ivTail)
		}
	}
	// A 32-byte passphrase, the longest, fills the derivation buffer.
	long := bytes.Repeat([]byte("x"), MaxEncKeyLen)
	k1, _ := deriveKeyIV(long, testSalt[:])
	k2, _ := deriveKeyIV(long[:31], testSalt[:])
	if k1 == k2 {
		t.Error("the 32nd passphrase byte does not matter")
	}
	// Legacy cuts long passphrases to 16 bytes.
	var lb [16]byte
	if got := legacyPass([]byte("0123456789abcdefXYZ"), &lb); string(got) != "0123456789abcdef" {
		t.Errorf("legacy cut = %q", got)
	}
}

// v01 is the spec's default packet (V1).
const v01 = "8Q3PxnWAhMjMRW/nwtoNBjpQtFUnA+/S2i3M2V4V+nFMGc+EcJ6Y7zsFcl6HSLleXTfAe9/yOxhK2yf01Gifwucs83XiYw11fP9xAyqDo5jz24WjlY69abVJxTx/oHO5W2F18FqifOU4HSdmrzlccQJtd/XnxI4M0Msvf2sZk4ovwPk4rPOPQ6bRim8qdgl7BNaqd50ygOaU"

// v18 has no HMAC (161 characters).
const v18 = "+/myGqYmzof9vwpYOksMcHHx/vwKMZX84OuyyVhcF92JZbLVW5MY0EKmA1LZcXJ9luPS0ZEGGR63Xrhr78Ms6WcEfj6XMwZqidR6oAcz9jAmX7nJ98E+k6lK737fc4lLYvGe5Q48yclj+PrxvLWMXhQLjI0B/dsvI"

// TestPrefilterPitfalls covers the cheap checks, one case per pitfall of
// spec §15 that they stop.
func TestPrefilterPitfalls(t *testing.T) {
	if err := Prefilter([]byte(v01)); err != nil {
		t.Fatalf("Prefilter(v01) = %v", err)
	}
	valid200 := "8" + strings.Repeat("A", 199)
	for _, tc := range []struct {
		name    string
		payload string
		want    error
	}{
		{"§15.6 prefix re-added", saltedPrefix + v01, ErrPrefix},
		{"§15.6 prefix re-added twice", saltedPrefix + saltedPrefix + v01, ErrPrefix},
		{"§15.7 '=' appended (replay bypass without HMAC)", v01 + "=", errEquals},
		{"§15.7 '==' appended", v01 + "==", errEquals},
		{"§15.7 '=' inside", v01[:100] + "=" + v01[101:], errEquals},
		{"§15.13 -B file newline", v01 + "\n", errAlphabet},
		{"§15.13 CRLF", v01 + "\r\n", errAlphabet},
		{"§11 URL-safe '-' from HTTP, not unwrapped", strings.ReplaceAll(valid200, "AA", "A-"), errAlphabet},
		{"§11 URL-safe '_' from HTTP, not unwrapped", strings.ReplaceAll(valid200, "AA", "A_"), errAlphabet},
		{"space", v01[:50] + " " + v01[51:], errAlphabet},
		{"NUL", v01[:50] + "\x00" + v01[51:], errAlphabet},
		{"high byte", v01[:50] + "\xc3" + v01[51:], errAlphabet},
		{"§7 too short (139)", valid200[:139], errTooShort},
		{"empty", "", errTooShort},
		{"§7 too long (1500)", "8" + strings.Repeat("A", 1499), errTooLong},
		{"§12 GPG payload (hQ…)", "hQ" + valid200, errFirstChar},
		{"§4.4 first char outside 8 9 + /", "A" + valid200[1:], errFirstChar},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Prefilter([]byte(tc.payload))
			if err != tc.want {
				t.Fatalf("Prefilter = %v, want %v", err, tc.want)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("%v does not wrap ErrMalformed", err)
			}
			if _, err := Decode([]byte(tc.payload), k1()); err != tc.want {
				t.Errorf("Decode = %v, want %v", err, tc.want)
			}
		})
	}
	// Bounds are inclusive; 400+ characters are not refused (§15.8).
	for _, n := range []int{MinPayloadLen, 399, 400, 1000, MaxPayloadLen} {
		p := "+" + strings.Repeat("z", n-1)
		if err := Prefilter([]byte(p)); err != nil {
			t.Errorf("Prefilter(%d characters) = %v", n, err)
		}
	}
	for _, c := range "89+/" {
		if err := Prefilter([]byte(string(c) + valid200[1:])); err != nil {
			t.Errorf("Prefilter(first %q) = %v", c, err)
		}
	}
}

// TestPrefixHMAC is the spec's second defence against the prefix trick
// (§4.4): the HMAC always gets the prefix added, so a doubled prefix fails
// it even without Prefilter.
func TestPrefixHMAC(t *testing.T) {
	k := k1()
	if !VerifyHMAC([]byte(v01), k.HMAC, SHA256) {
		t.Fatal("VerifyHMAC(v01) = false")
	}
	if VerifyHMAC([]byte(saltedPrefix+v01), k.HMAC, SHA256) {
		t.Error("VerifyHMAC accepts the doubled prefix")
	}
	for _, d := range []Digest{MD5, SHA1, SHA384, SHA512, SHA3_256, SHA3_512} {
		if VerifyHMAC([]byte(v01), k.HMAC, d) {
			t.Errorf("VerifyHMAC(v01, %v) = true", d)
		}
	}
	if VerifyHMAC([]byte(v01), nil, SHA256) || VerifyHMAC([]byte(v01[:50]), k.HMAC, SHA256) || VerifyHMAC([]byte(v01), k.HMAC, numDigests) {
		t.Error("VerifyHMAC accepts a missing key, a short payload or an unknown digest")
	}
}

// TestNonCanonicalBase64 shows that trailing bits, which libfko ignores,
// cannot mint a second replay key for a packet without an HMAC (§9).
func TestNonCanonicalBase64(t *testing.T) {
	k := Keys{Enc: []byte("rijndael-pass-v1"), AllowNoHMAC: true}
	if _, err := Decode([]byte(v18), k); err != nil {
		t.Fatalf("Decode(v18) = %v", err)
	}
	// 10+161 = 171 characters: the last one carries 2 unused bits.
	last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", v18[len(v18)-1])
	if last&3 != 0 {
		t.Fatal("v18 is not canonical")
	}
	alt := v18[:len(v18)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[last|1])
	if _, err := base64.RawStdEncoding.DecodeString(saltedPrefix + alt); err != nil {
		t.Fatalf("lenient decoding refuses the variant: %v", err)
	}
	if _, err := Decode([]byte(alt), k); !errors.Is(err, ErrDecrypt) {
		t.Errorf("Decode(variant) = %v, want ErrDecrypt", err)
	}
}

func TestKeysValidate(t *testing.T) {
	good := k1()
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, k := range map[string]Keys{
		"empty encryption key":  {HMAC: []byte("h")},
		"33-byte key (§4.1)":    {Enc: bytes.Repeat([]byte("k"), 33), HMAC: []byte("h")},
		"no HMAC key":           {Enc: []byte("k")},
		"129-byte HMAC key":     {Enc: []byte("k"), HMAC: bytes.Repeat([]byte("h"), 129)},
		"same keys (§4.1)":      {Enc: []byte("same"), HMAC: []byte("same")},
		"unknown HMAC digest":   {Enc: []byte("k"), HMAC: []byte("h"), HMACDigest: numDigests},
		"unknown mode":          {Enc: []byte("k"), HMAC: []byte("h"), Mode: numModes},
		"AllowNoHMAC, no key":   {AllowNoHMAC: true},
		"AllowNoHMAC, long key": {Enc: bytes.Repeat([]byte("k"), 40), AllowNoHMAC: true},
	} {
		if err := k.Validate(); !errors.Is(err, ErrKeys) {
			t.Errorf("%s: Validate = %v, want ErrKeys", name, err)
		}
		if _, err := Decode([]byte(v01), k); !errors.Is(err, ErrKeys) {
			t.Errorf("%s: Decode = %v, want ErrKeys", name, err)
		}
	}
	// The longest keys work.
	k := Keys{Enc: bytes.Repeat([]byte("k"), MaxEncKeyLen), HMAC: bytes.Repeat([]byte("h"), MaxHMACKeyLen), HMACDigest: SHA3_256}
	p, err := EncodeRandom(testMessage(TypeAccess), k, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(p, k); err != nil {
		t.Fatal(err)
	}
	// Legacy with an HMAC: the client refuses to build it (§4.3).
	k = k1()
	k.Mode = Legacy
	if _, err := EncodeRandom(testMessage(TypeAccess), k, rand.Reader); !errors.Is(err, ErrKeys) {
		t.Errorf("Encode(legacy with HMAC) = %v, want ErrKeys", err)
	}
}

func TestParseNames(t *testing.T) {
	for d := range numDigests {
		got, err := ParseDigest(d.String())
		if err != nil || got != d {
			t.Errorf("ParseDigest(%q) = %v, %v", d, got, err)
		}
	}
	if d, err := ParseDigest("SHA3-512"); err != nil || d != SHA3_512 {
		t.Errorf("ParseDigest(SHA3-512) = %v, %v", d, err)
	}
	if _, err := ParseDigest("sha224"); err == nil {
		t.Error("ParseDigest(sha224) succeeded")
	}
	for m := range numModes {
		got, err := ParseMode(strings.ToUpper(m.String()))
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v", m, got, err)
		}
	}
	if _, err := ParseMode("pcbc"); err == nil {
		t.Error("ParseMode(pcbc) succeeded; libfko does not support it")
	}
	if numDigests.String() != "digest(7)" || numModes.String() != "mode(6)" || numTypes.String() != "type(7)" {
		t.Error("unknown values print badly")
	}
	if numDigests.Size() != 0 || numDigests.EncodedLen() != 0 {
		t.Error("unknown digest has a size")
	}
}

func testMessage(typ MessageType) *Message {
	m := &Message{
		Username:  "alice",
		Timestamp: time.Unix(1795268229, 0).UTC(),
		Type:      typ,
		AllowIP:   netip.MustParseAddr("203.0.113.7"),
		Ports:     []Port{{ProtoTCP, 22}, {ProtoUDP, 53}},
	}
	if typ == TypeCommand {
		m.Ports = nil
		m.Command = "echo hello, world"
	}
	if typ.HasNAT() {
		m.NATHost, m.NATPort = "192.168.10.2", 55000
		if typ.LocalNAT() {
			m.NATHost, m.NATPort = "127.0.0.1", 22
		}
	}
	if typ.HasTimeout() {
		m.ClientTimeout = 45
	}
	return m
}

// TestRoundTrip encodes and decodes every message type with every inner
// digest, HMAC digest and mode.
func TestRoundTrip(t *testing.T) {
	n := 0
	for mode := range numModes {
		for hd := range numDigests {
			for id := range numDigests {
				for typ := range numTypes {
					k := k1()
					k.HMACDigest, k.Mode = hd, mode
					if mode == Legacy {
						k.HMAC, k.AllowNoHMAC = nil, true
						if hd != SHA256 {
							continue
						}
					}
					m := testMessage(typ)
					m.Digest = id
					p, err := EncodeRandom(m, k, rand.Reader)
					if err != nil {
						t.Fatalf("%v/%v/%v/%v: Encode: %v", mode, hd, id, typ, err)
					}
					got, err := Decode(p, k)
					if err != nil {
						t.Fatalf("%v/%v/%v/%v: Decode: %v", mode, hd, id, typ, err)
					}
					checkSame(t, m, got)
					if got.Access == "" || len(got.Random) != 16 || got.Version != "3.0.0" || got.ReplayKey() != ReplayKey(p) {
						t.Fatalf("%v/%v/%v/%v: bad decoded message %+v", mode, hd, id, typ, got)
					}
					n++
				}
			}
		}
	}
	t.Logf("%d combinations", n)
}

// checkSame compares the fields Encode took from want with got.
func checkSame(t *testing.T, want, got *Message) {
	t.Helper()
	w := *want
	w.Random, w.Version, w.Access, w.NAT, w.DigestB64, w.replay = got.Random, got.Version, got.Access, got.NAT, got.DigestB64, got.replay
	if !reflect.DeepEqual(&w, got) {
		t.Fatalf("decoded\n %+v\nwant\n %+v", got, &w)
	}
}

// TestFields feeds Decode plaintexts the client would not build, through
// real encryption and HMAC, to check each rule of spec §3.
func TestFields(t *testing.T) {
	k := k1()
	const head = "1234567890123456:" // random value
	user := b64("root")
	acc := b64("203.0.113.7,tcp/22")
	nat := b64("192.168.10.2,55000")
	auth := b64("secret")
	for _, tc := range []struct {
		name string
		data string // plaintext without the inner digest
		want error  // nil: decodes
		// for the ones that decode:
		check func(*Message) bool
	}{
		{"access", head + user + ":1795268229:3.0.0:1:" + acc, nil, func(m *Message) bool { return m.Type == TypeAccess && m.ServerAuth == "" }},
		{"access + server auth", head + user + ":1795268229:3.0.0:1:" + acc + ":" + auth, nil, func(m *Message) bool { return m.ServerAuth == "secret" }},
		{"access, 3 fields after type", head + user + ":1795268229:3.0.0:1:" + acc + ":" + auth + ":" + auth, ErrFields, nil},
		{"access, empty trailing field", head + user + ":1795268229:3.0.0:1:" + acc + ":", ErrFields, nil},
		{"timeout type without timeout", head + user + ":1795268229:3.0.0:3:" + acc, ErrFields, nil},
		{"timeout", head + user + ":1795268229:3.0.0:3:" + acc + ":60", nil, func(m *Message) bool { return m.ClientTimeout == 60 && m.Timeout() == time.Minute }},
		{"timeout + server auth", head + user + ":1795268229:3.0.0:3:" + acc + ":" + auth + ":60", nil, func(m *Message) bool { return m.ClientTimeout == 60 && m.ServerAuth == "secret" }},
		{"timeout 65536 (§15.10)", head + user + ":1795268229:3.0.0:3:" + acc + ":65536", nil, func(m *Message) bool { return m.ClientTimeout == 65536 }},
		{"timeout 65537 (§15.10)", head + user + ":1795268229:3.0.0:3:" + acc + ":65537", ErrFields, nil},
		{"timeout 70000 (§3.2)", head + user + ":1795268229:3.0.0:3:" + acc + ":70000", ErrFields, nil},
		{"timeout not digits", head + user + ":1795268229:3.0.0:3:" + acc + ":6x", ErrFields, nil},
		{"timeout, empty server auth", head + user + ":1795268229:3.0.0:3:" + acc + "::60", ErrFields, nil},
		{"NAT", head + user + ":1795268229:3.0.0:2:" + acc + ":" + nat, nil, func(m *Message) bool { return m.NATHost == "192.168.10.2" && m.NATPort == 55000 }},
		{"NAT missing", head + user + ":1795268229:3.0.0:2:" + acc, ErrFields, nil},
		{"NAT hostname", head + user + ":1795268229:3.0.0:5:" + acc + ":" + b64("db.internal,5432"), nil, func(m *Message) bool { return m.NATHost == "db.internal" && m.NATPort == 5432 }},
		{"NAT two commas", head + user + ":1795268229:3.0.0:2:" + acc + ":" + b64("1.2.3.4,22,23"), ErrFields, nil},
		{"NAT port 0", head + user + ":1795268229:3.0.0:2:" + acc + ":" + b64("1.2.3.4,0"), ErrFields, nil},
		{"NAT port 65536", head + user + ":1795268229:3.0.0:2:" + acc + ":" + b64("1.2.3.4,65536"), ErrFields, nil},
		{"NAT host with slash", head + user + ":1795268229:3.0.0:2:" + acc + ":" + b64("a/b,22"), ErrFields, nil},
		{"NAT + timeout + auth", head + user + ":1795268229:3.0.0:4:" + acc + ":" + nat + ":" + auth + ":45", nil, func(m *Message) bool { return m.ClientTimeout == 45 && m.ServerAuth == "secret" && m.NATPort == 55000 }},
		{"NAT + timeout, 5 fields", head + user + ":1795268229:3.0.0:4:" + acc + ":" + nat + ":" + auth + ":" + auth + ":45", ErrFields, nil},
		{"command", head + user + ":1795268229:3.0.0:0:" + b64("0.0.0.0,rm -rf /tmp/x; echo a,b"), nil, func(m *Message) bool {
			return m.Command == "rm -rf /tmp/x; echo a,b" && m.AllowIP == netip.IPv4Unspecified()
		}},
		{"command + server auth", head + user + ":1795268229:3.0.0:0:" + acc + ":" + auth, nil, func(m *Message) bool { return m.ServerAuth == "secret" }},
		{"command with a timeout field", head + user + ":1795268229:3.0.0:0:" + acc + ":60", ErrFields, nil}, // "60" is read as server_auth, which decodes to binary
		{"type 7", head + user + ":1795268229:3.0.0:7:" + acc, ErrFields, nil},
		{"type 01", head + user + ":1795268229:3.0.0:01:" + acc, nil, func(m *Message) bool { return m.Type == TypeAccess }},
		{"type 3 digits", head + user + ":1795268229:3.0.0:001:" + acc, ErrFields, nil},
		{"any source 0.0.0.0 (§15.11)", head + user + ":1795268229:3.0.0:1:" + b64("0.0.0.0,tcp/22"), nil, func(m *Message) bool { return m.AllowIP == netip.IPv4Unspecified() }},
		{"upper-case proto", head + user + ":1795268229:3.0.0:1:" + b64("1.2.3.4,TCP/22,Udp/53"), nil, func(m *Message) bool { return len(m.Ports) == 2 && m.Ports[1] == Port{ProtoUDP, 53} }},
		{"icmp (§15.14)", head + user + ":1795268229:3.0.0:1:" + b64("1.2.3.4,icmp/0"), ErrFields, nil},
		{"none/0 (§15.14)", head + user + ":1795268229:3.0.0:1:" + b64("1.2.3.4,none/0"), ErrFields, nil},
		{"port 0", head + user + ":1795268229:3.0.0:1:" + b64("1.2.3.4,tcp/0"), ErrFields, nil},
		{"port 65536", head + user + ":1795268229:3.0.0:1:" + b64("1.2.3.4,tcp/65536"), ErrFields, nil},
		{"port 6 digits", head + user + ":1795268229:3.0.0:1:" + b64("1.2.3.4,tcp/000022"), ErrFields, nil},
		{"no ports", head + user + ":1795268229:3.0.0:1:" + b64("1.2.3.4,"), ErrFields, nil},
		{"trailing comma", head + user + ":1795268229:3.0.0:1:" + b64("1.2.3.4,tcp/22,"), ErrFields, nil},
		{"allow IP hostname", head + user + ":1795268229:3.0.0:1:" + b64("example.com,tcp/22"), ErrFields, nil},
		{"allow IP IPv6 (knockgate's extension)", head + user + ":1795268229:3.0.0:1:" + b64("::1,tcp/22"), nil, func(m *Message) bool { return m.AllowIP == netip.IPv6Loopback() }},
		{"allow IP IPv6, 39 characters", head + user + ":1795268229:3.0.0:1:" + b64("2001:0db8:0000:0000:0000:ff00:0042:8329,tcp/22"), nil, func(m *Message) bool {
			return m.AllowIP == netip.MustParseAddr("2001:db8::ff00:42:8329")
		}},
		{"allow IP IPv6 upper case", head + user + ":1795268229:3.0.0:3:" + b64("2001:DB8::A,tcp/22,udp/53") + ":60", nil, func(m *Message) bool {
			return m.AllowIP == netip.MustParseAddr("2001:db8::a") && len(m.Ports) == 2 && m.ClientTimeout == 60
		}},
		{"allow IP IPv6 command", head + user + ":1795268229:3.0.0:0:" + b64("2001:db8::1,uptime"), nil, func(m *Message) bool { return m.Command == "uptime" && m.AllowIP.Is6() }},
		{"allow IP IPv6 unspecified", head + user + ":1795268229:3.0.0:1:" + b64("::,tcp/22"), ErrFields, nil},
		{"allow IP IPv4-mapped dotted", head + user + ":1795268229:3.0.0:1:" + b64("::ffff:1.2.3.4,tcp/22"), ErrFields, nil},
		{"allow IP IPv4-mapped hex", head + user + ":1795268229:3.0.0:1:" + b64("::ffff:102:304,tcp/22"), ErrFields, nil},
		{"allow IP IPv4-compatible dotted", head + user + ":1795268229:3.0.0:1:" + b64("::1.2.3.4,tcp/22"), ErrFields, nil},
		{"allow IP IPv6 zone", head + user + ":1795268229:3.0.0:1:" + b64("fe80::1%eth0,tcp/22"), ErrFields, nil},
		{"allow IP IPv6 brackets", head + user + ":1795268229:3.0.0:1:" + b64("[2001:db8::1],tcp/22"), ErrFields, nil},
		{"allow IP IPv6 two ::", head + user + ":1795268229:3.0.0:1:" + b64("2001:db8::1::2,tcp/22"), ErrFields, nil},
		{"allow IP IPv6 40 characters", head + user + ":1795268229:3.0.0:1:" + b64("2001:0db8:0000:0000:0000:ff00:0042:08329,tcp/22"), ErrFields, nil},
		{"allow IP IPv6 nine groups", head + user + ":1795268229:3.0.0:1:" + b64("1:2:3:4:5:6:7:8:9,tcp/22"), ErrFields, nil},
		{"allow IP 4 octets > 255", head + user + ":1795268229:3.0.0:1:" + b64("1.2.3.256,tcp/22"), ErrFields, nil},
		{"allow IP leading zero", head + user + ":1795268229:3.0.0:1:" + b64("01.2.3.4,tcp/22"), ErrFields, nil},
		{"message 192 bytes (§15.9)", head + user + ":1795268229:3.0.0:1:" + b64("1.2.3.4"+strings.Repeat(",tcp/22", 25)+",tcp/12345"), nil, func(m *Message) bool { return len(m.Access) == 192 }},
		{"message 193 bytes (§15.9)", head + user + ":1795268229:3.0.0:1:" + b64("1.2.3.4"+strings.Repeat(",tcp/22", 24)+",tcp/1234,tcp/1234"), ErrFields, nil},
		{"message not base64", head + user + ":1795268229:3.0.0:1:" + "MjAz*", ErrFields, nil},
		{"message binary", head + user + ":1795268229:3.0.0:1:" + b64("1.2.3.4,tcp/22\x00"), ErrFields, nil},
		{"message padded", head + user + ":1795268229:3.0.0:1:" + base64.StdEncoding.EncodeToString([]byte("1.2.3.4,tcp/22")), nil, func(m *Message) bool { return m.Access == "1.2.3.4,tcp/22" }},
		{"username 48 bytes (§15.9)", head + b64(strings.Repeat("u", 48)) + ":1795268229:3.0.0:1:" + acc, nil, func(m *Message) bool { return len(m.Username) == 48 }},
		{"username 49 bytes (§15.9)", head + b64(strings.Repeat("u", 49)) + ":1795268229:3.0.0:1:" + acc, ErrFields, nil},
		{"username with comma", head + b64("a,b") + ":1795268229:3.0.0:1:" + acc, ErrFields, nil},
		{"username with space and dot", head + b64("alice smith.jr") + ":1795268229:3.0.0:1:" + acc, nil, func(m *Message) bool { return m.Username == "alice smith.jr" }},
		{"username empty", head + ":1795268229:3.0.0:1:" + acc, ErrFields, nil},
		{"username dangling char", head + "A:1795268229:3.0.0:1:" + acc, ErrFields, nil},
		{"timestamp 0", head + user + ":0:3.0.0:1:" + acc, nil, func(m *Message) bool { return m.Timestamp.Unix() == 0 }},
		{"timestamp max int", head + user + ":2147483647:3.0.0:1:" + acc, nil, func(m *Message) bool { return m.Timestamp.Unix() == 2147483647 }},
		{"timestamp over int", head + user + ":2147483648:3.0.0:1:" + acc, ErrFields, nil},
		{"timestamp 13 digits", head + user + ":0001795268229:3.0.0:1:" + acc, ErrFields, nil},
		{"timestamp negative", head + user + ":-1:3.0.0:1:" + acc, ErrFields, nil},
		{"version 8 chars", head + user + ":1795268229:3.0.0.00:1:" + acc, nil, func(m *Message) bool { return m.Version == "3.0.0.00" }},
		{"version 9 chars", head + user + ":1795268229:3.0.0.000:1:" + acc, ErrFields, nil},
		{"version empty", head + user + ":1795268229::1:" + acc, ErrFields, nil},
		{"random 17 digits", "12345678901234567:" + user + ":1795268229:3.0.0:1:" + acc, ErrDecrypt, nil},
		{"random with letter", "123456789012345x:" + user + ":1795268229:3.0.0:1:" + acc, ErrDecrypt, nil},
		{"too few fields", head + user + ":1795268229:3.0.0:1", ErrFields, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := sealPlaintext([]byte(withDigest(tc.data)), &k, testSalt)
			m, err := Decode(p, k)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("Decode = %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !tc.check(m) {
				t.Fatalf("unexpected message %+v", m)
			}
		})
	}
}

// TestPlaintextChecks covers what Decode checks before the fields.
func TestPlaintextChecks(t *testing.T) {
	k := k1()
	data := "1234567890123456:" + b64("root") + ":1795268229:3.0.0:1:" + b64("203.0.113.7,tcp/22")
	good := withDigest(data)
	for _, tc := range []struct {
		name string
		pt   string
		want error
	}{
		{"good", good, nil},
		{"digest changed", good[:len(good)-2] + flip(good[len(good)-2]) + good[len(good)-1:], ErrDigest},
		{"digest trailing bits changed", good[:len(good)-1] + flip(good[len(good)-1]), ErrDigest},
		{"digest of another algorithm's length", data + ":" + strings.Repeat("A", 30), ErrDigest},
		{"no digest", data + ":", ErrDigest},
		{"non-printable", strings.Replace(good, "3.0.0", "3.0\t0", 1), ErrFields},
		{"too few fields", "1234567890123456:" + strings.Repeat("A", 150), ErrFields},
		{"no colon after random", "1234567890123456" + good[17:], ErrDecrypt},
	} {
		_, err := Decode(sealPlaintext([]byte(tc.pt), &k, testSalt), k)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: Decode = %v, want %v", tc.name, err, tc.want)
		}
	}
	// The SHA-3 fallback for the ambiguous lengths (§5, §15.3).
	for _, d := range []Digest{SHA3_256, SHA3_512, SHA512, SHA384, MD5, SHA1} {
		var sum [maxDigestSize]byte
		pt := data + ":" + base64.RawStdEncoding.EncodeToString(d.sum(&sum, []byte(data)))
		m, err := Decode(sealPlaintext([]byte(pt), &k, testSalt), k)
		if err != nil || m.Digest != d {
			t.Errorf("%v digest: Decode = %v, %v", d, m, err)
		}
	}
	// Bad padding and a ciphertext that is not whole blocks.
	raw, _ := base64.RawStdEncoding.DecodeString(saltedPrefix + v18)
	kn := Keys{Enc: []byte("rijndael-pass-v1"), AllowNoHMAC: true}
	for name, r := range map[string][]byte{
		"ciphertext not whole blocks": raw[:len(raw)-3],
		"no ciphertext":               raw[:16],
	} {
		p := []byte(base64.RawStdEncoding.EncodeToString(r)[len(saltedPrefix):])
		for len(p) < MinPayloadLen {
			p = append(p, "AAAA"...)
			r = append(r, 0, 0, 0)
		}
		if _, err := decrypt(p, &kn); err == nil {
			t.Errorf("%s: decrypt succeeded", name)
		}
	}
	if _, err := unpad([]byte{1, 2, 3, 0}); err == nil {
		t.Error("unpad accepts 0")
	}
	if _, err := unpad([]byte{1, 2, 3, 17}); err == nil {
		t.Error("unpad accepts 17")
	}
	if _, err := unpad([]byte{1, 3, 2, 2}); err != nil {
		t.Error("unpad refuses good padding")
	}
	if _, err := unpad([]byte{1, 3, 3, 2}); err == nil {
		t.Error("unpad accepts uneven padding")
	}
}

// TestLongPayload: 400 characters and more decode here though fwknopd
// 2.6.10 would call them GPG (§7, §15.8).
func TestLongPayload(t *testing.T) {
	k := k1()
	k.HMACDigest = SHA512
	m := testMessage(TypeAccess)
	m.Digest = SHA512
	m.Ports = nil
	for i := range 20 {
		m.Ports = append(m.Ports, Port{ProtoTCP, uint16(1000 + i)})
	}
	p, err := EncodeRandom(m, k, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) < 400 {
		t.Fatalf("payload is only %d characters", len(p))
	}
	got, err := Decode(p, k)
	if err != nil {
		t.Fatal(err)
	}
	checkSame(t, m, got)
}

// TestRoundTripIPv6 covers knockgate's one extension of the format: an
// IPv6 allow IP is written by Encode and read back by Decode, for every
// message type.
func TestRoundTripIPv6(t *testing.T) {
	for _, ip := range []string{"2001:db8:1::10", "::1", "fe80::1", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"} {
		for typ := range numTypes {
			m := testMessage(typ)
			m.AllowIP = netip.MustParseAddr(ip)
			p, err := EncodeRandom(m, k1(), rand.Reader)
			if err != nil {
				t.Fatalf("%s/%v: Encode: %v", ip, typ, err)
			}
			got, err := Decode(p, k1())
			if err != nil {
				t.Fatalf("%s/%v: Decode: %v", ip, typ, err)
			}
			checkSame(t, m, got)
			if want := ip + ","; !strings.HasPrefix(got.Access, want) {
				t.Fatalf("%s/%v: access %q does not start with %q", ip, typ, got.Access, want)
			}
		}
	}
}

func TestEncodeRefuses(t *testing.T) {
	k := k1()
	for name, mod := range map[string]func(*Message){
		"timeout on an access type":      func(m *Message) { m.ClientTimeout = 30 },
		"timeout over 65536 (§15.10)":    func(m *Message) { m.Type, m.ClientTimeout = TypeTimeoutAccess, 70000 },
		"NAT on an access type":          func(m *Message) { m.NATHost, m.NATPort = "10.0.0.1", 22 },
		"random value too short":         func(m *Message) { m.Random = "123" },
		"random value not digits":        func(m *Message) { m.Random = "123456789012345x" },
		"no timestamp":                   func(m *Message) { m.Timestamp = time.Time{} },
		"timestamp before 1970":          func(m *Message) { m.Timestamp = time.Unix(-5, 0) },
		"version with colon":             func(m *Message) { m.Version = "3:0" },
		"version too long":               func(m *Message) { m.Version = "123456789" },
		"username empty":                 func(m *Message) { m.Username = "" },
		"username 49 bytes":              func(m *Message) { m.Username = strings.Repeat("u", 49) },
		"no ports":                       func(m *Message) { m.Ports = nil },
		"icmp":                           func(m *Message) { m.Access = "1.2.3.4,icmp/0" },
		"no allow IP":                    func(m *Message) { m.AllowIP = netip.Addr{} },
		"IPv4-mapped allow IP":           func(m *Message) { m.AllowIP = netip.MustParseAddr("::ffff:192.0.2.1") },
		"unspecified IPv6 allow IP":      func(m *Message) { m.AllowIP = netip.IPv6Unspecified() },
		"allow IP with a zone":           func(m *Message) { m.AllowIP = netip.MustParseAddr("fe80::1%eth0") },
		"unknown type":                   func(m *Message) { m.Type = numTypes },
		"unknown digest":                 func(m *Message) { m.Digest = numDigests },
		"message over 192 bytes (§15.9)": func(m *Message) { m.Access = "1.2.3.4" + strings.Repeat(",tcp/22", 27) },
	} {
		m := testMessage(TypeAccess)
		m.Random = "1234567890123456"
		mod(m)
		if _, err := Encode(m, k, testSalt); !errors.Is(err, ErrFields) {
			t.Errorf("%s: Encode = %v, want ErrFields", name, err)
		}
	}
	// Under 140 characters fwknopd drops the packet; Encode refuses it.
	m := &Message{Random: "1234567890123456", Username: "u", Timestamp: time.Unix(1, 0), Type: TypeAccess, Access: "1.2.3.4,tcp/1", Digest: MD5}
	kn := Keys{Enc: []byte("k"), AllowNoHMAC: true}
	if _, err := Encode(m, kn, testSalt); !errors.Is(err, errPayloadLen) {
		t.Errorf("short packet: Encode = %v, want errPayloadLen", err)
	}
	if _, err := EncodeRandom(m, kn, bytes.NewReader(nil)); err == nil {
		t.Error("EncodeRandom with an empty reader succeeded")
	}
	m.Random = ""
	if _, err := EncodeRandom(m, kn, bytes.NewReader(make([]byte, 8))); err == nil {
		t.Error("EncodeRandom without bytes for the random value succeeded")
	}
}

func TestCheckAge(t *testing.T) {
	ts := time.Unix(1795268229, 0)
	m := &Message{Timestamp: ts}
	const window = 120 * time.Second
	for _, tc := range []struct {
		now time.Time
		ok  bool
	}{
		{ts, true},
		{ts.Add(120 * time.Second), true},
		{ts.Add(120*time.Second + 999*time.Millisecond), true}, // whole seconds, as fwknopd
		{ts.Add(121 * time.Second), false},
		{ts.Add(-100 * time.Second), true}, // B05: +100 s skew granted
		{ts.Add(-120 * time.Second), true},
		{ts.Add(-121 * time.Second), false}, // future timestamps count too (§15.12)
		{ts.Add(1000 * time.Second), false}, // B09
		{time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), false},
	} {
		err := m.CheckAge(tc.now, window)
		if tc.ok != (err == nil) || err != nil && !errors.Is(err, ErrAge) {
			t.Errorf("CheckAge(ts%+v) = %v", tc.now.Sub(ts), err)
		}
	}
	if err := (&Message{}).CheckAge(ts, window); !errors.Is(err, ErrAge) {
		t.Errorf("CheckAge(zero timestamp) = %v", err)
	}
}

func TestGenerateKeys(t *testing.T) {
	enc, mac, err := GenerateKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e, err1 := base64.StdEncoding.DecodeString(enc)
	h, err2 := base64.StdEncoding.DecodeString(mac)
	if err1 != nil || err2 != nil || len(e) != 32 || len(h) != 64 {
		t.Fatalf("GenerateKeys = %q (%d bytes), %q (%d bytes)", enc, len(e), mac, len(h))
	}
	k := Keys{Enc: e, HMAC: h}
	if err := k.Validate(); err != nil {
		t.Fatal(err)
	}
	for d, n := range map[Digest]int{MD5: 16, SHA1: 20, SHA256: 64, SHA384: 128, SHA512: 128, SHA3_256: 64, SHA3_512: 64} {
		_, mac, err := GenerateKeysFor(rand.Reader, d)
		if h, _ := DecodeKey(mac); err != nil || len(h) != n {
			t.Errorf("%v: HMAC key is %d bytes, want %d (%v)", d, len(h), n, err)
		}
	}
	if _, _, err := GenerateKeysFor(rand.Reader, numDigests); err == nil {
		t.Error("GenerateKeysFor(unknown digest) succeeded")
	}
	if _, _, err := GenerateKeys(bytes.NewReader(make([]byte, 10))); err == nil {
		t.Error("GenerateKeys with a short reader succeeded")
	}
	want := "KEY_BASE64: " + enc + "\nHMAC_KEY_BASE64: " + mac + "\n"
	if got := FormatKeys(enc, mac); got != want {
		t.Errorf("FormatKeys = %q", got)
	}
	// DecodeKey takes fwknop's padded form and the unpadded one.
	for _, s := range []string{"cbP9W2e+uGX6oNpbyGwh6KnqYaDmVHrlWmVwdvB6SnpVeARtfgEXwhmph1Bl9ZIxGi7tbmFDW5CyZoqctXItdg==", "cbP9W2e+uGX6oNpbyGwh6KnqYaDmVHrlWmVwdvB6SnpVeARtfgEXwhmph1Bl9ZIxGi7tbmFDW5CyZoqctXItdg"} {
		if b, err := DecodeKey(s); err != nil || len(b) != 64 {
			t.Errorf("DecodeKey(%q) = %d bytes, %v", s, len(b), err)
		}
	}
	if _, err := DecodeKey("not*base64"); err == nil {
		t.Error("DecodeKey accepted garbage")
	}
}

func TestTypes(t *testing.T) {
	for typ, want := range map[MessageType]string{
		TypeCommand: "command--", TypeAccess: "access--", TypeNATAccess: "nat_access-N-",
		TypeTimeoutAccess: "client_timeout_access--T", TypeTimeoutNATAccess: "client_timeout_nat_access-N-T",
		TypeLocalNATAccess: "local_nat_access-NL-", TypeTimeoutLocalNATAccess: "client_timeout_local_nat_access-NL-T",
	} {
		got := typ.String() + "-"
		if typ.HasNAT() {
			got += "N"
		}
		if typ.LocalNAT() {
			got += "L"
		}
		got += "-"
		if typ.HasTimeout() {
			got += "T"
		}
		if got != want {
			t.Errorf("type %d: %s, want %s", typ, got, want)
		}
	}
	if s := fmt.Sprint(Port{ProtoUDP, 53}, Port{ProtoTCP, 22}, Port{1, 0}); s != "udp/53 tcp/22 proto(1)/0" {
		t.Errorf("ports print as %q", s)
	}
}

// TestPrefilterNoAllocs: rejecting garbage must not allocate.
func TestPrefilterNoAllocs(t *testing.T) {
	inputs := [][]byte{[]byte(v01), []byte("short"), []byte("A" + v01), []byte(v01 + "="), []byte(saltedPrefix + v01), bytes.Repeat([]byte{0xff}, 300)}
	for _, in := range inputs {
		if n := testing.AllocsPerRun(100, func() { _ = Prefilter(in) }); n != 0 {
			t.Errorf("Prefilter(%.10q…) allocates %v times", in, n)
		}
	}
}

// TestTagMatchesCryptoHMAC checks the hand-written HMAC against
// crypto/hmac for every digest, with keys shorter than, as long as and
// longer than the digest's block, and bodies up to the longest payload.
func TestTagMatchesCryptoHMAC(t *testing.T) {
	ref := map[Digest]func() hash.Hash{
		SHA256: sha256.New, MD5: md5.New, SHA1: sha1.New, SHA384: sha512.New384, SHA512: sha512.New,
		SHA3_256: func() hash.Hash { return sha3.New256() }, SHA3_512: func() hash.Hash { return sha3.New512() },
	}
	body := make([]byte, MaxPayloadLen)
	for i := range body {
		body[i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i*7%64]
	}
	for d := range numDigests {
		bs := digests[d].block
		if h := ref[d](); h.BlockSize() != bs || h.Size() != d.Size() {
			t.Fatalf("%v: block %d size %d, table says %d and %d", d, h.BlockSize(), h.Size(), bs, d.Size())
		}
		for _, kl := range []int{1, 16, bs - 1, bs, bs + 1, MaxHMACKeyLen} {
			key := bytes.Repeat([]byte{byte(kl)}, kl)
			for _, bl := range []int{0, 1, 150, MaxPayloadLen} {
				mac := hmac.New(ref[d], key)
				mac.Write([]byte(saltedPrefix))
				mac.Write(body[:bl])
				want := base64.RawStdEncoding.EncodeToString(mac.Sum(nil))
				var buf [maxDigestB64]byte
				if got := string(tag(&buf, body[:bl], key, d)); got != want {
					t.Errorf("%v, key %d bytes, body %d: tag %s, crypto/hmac %s", d, kl, bl, got, want)
				}
			}
		}
	}
	var buf [maxDigestB64]byte
	if got := tag(&buf, append(body, 'A'), k1().HMAC, SHA256); got != nil {
		t.Errorf("a body longer than MaxPayloadLen got the tag %s", got)
	}
}

// TestVerifyHMACNoAllocs: a server runs VerifyHMAC on every well-formed
// packet, forgeries included, so it must not allocate.
func TestVerifyHMACNoAllocs(t *testing.T) {
	k := k1()
	for d := range numDigests {
		for _, key := range [][]byte{k.HMAC, bytes.Repeat([]byte("k"), MaxHMACKeyLen)} {
			if n := testing.AllocsPerRun(100, func() { _ = VerifyHMAC([]byte(v01), key, d) }); n != 0 {
				t.Errorf("VerifyHMAC(%v, key %d bytes) allocates %v times", d, len(key), n)
			}
		}
	}
}
