package fwknop

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkDecode decodes the default client packet (v01: HMAC-SHA256,
// AES-256-CBC, SHA-256 inner digest).
func BenchmarkDecode(b *testing.B) {
	p, k := []byte(v01), k1()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(p, k); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeBadHMAC is the cost of a well-formed forgery: Prefilter
// and one HMAC.
func BenchmarkDecodeBadHMAC(b *testing.B) {
	p, k := []byte(v01), k1()
	k.HMAC = []byte("hmac-pass-WRONG")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(p, k); err != ErrHMAC {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyHMAC(b *testing.B) {
	p, k := []byte(v01), k1()
	b.ReportAllocs()
	for b.Loop() {
		if !VerifyHMAC(p, k.HMAC, SHA256) {
			b.Fatal("bad HMAC")
		}
	}
}

// BenchmarkPrefilterGarbage: random 204-byte datagrams, as a flood would
// send. Almost all fail on the first byte.
func BenchmarkPrefilterGarbage(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	bufs := make([][]byte, 1024)
	for i := range bufs {
		bufs[i] = make([]byte, 204)
		for j := range bufs[i] {
			bufs[i][j] = byte(r.Uint32())
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = Prefilter(bufs[i%len(bufs)])
		i++
	}
}

// BenchmarkPrefilterFullScan is Prefilter's worst case: a genuine payload,
// every byte checked.
func BenchmarkPrefilterFullScan(b *testing.B) {
	p := []byte(v01)
	b.ReportAllocs()
	for b.Loop() {
		if err := Prefilter(p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	k := k1()
	m := testMessage(TypeAccess)
	m.Random = "1234567890123456"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(m, k, testSalt); err != nil {
			b.Fatal(err)
		}
	}
}
