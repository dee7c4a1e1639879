package gate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/knockgate/knockgate/verdict"
)

var updateSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite testdata/fuzz/FuzzParse from the test packets")

var (
	src4 = netip.MustParseAddr("198.51.100.1")
	dst4 = netip.MustParseAddr("198.51.100.2")
	src6 = netip.MustParseAddr("2001:db8:1::1")
	dst6 = netip.MustParseAddr("2001:db8:1::2")
)

// tcp builds a TCP header with options (padded to 4 octets) and payload.
func tcp(sport, dport uint16, flags uint8, options, payload []byte) []byte {
	for len(options)%4 != 0 {
		options = append(options, 0) // end of option list
	}
	h := make([]byte, 20, 20+len(options)+len(payload))
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint32(h[4:], 0x01020304) // sequence number
	h[12] = byte((20+len(options))/4) << 4
	h[13] = flags
	binary.BigEndian.PutUint16(h[14:], 64240) // window
	h = append(h, options...)
	return append(h, payload...)
}

// udp builds a UDP header and payload.
func udp(sport, dport uint16, payload []byte) []byte {
	h := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], uint16(8+len(payload)))
	return append(h, payload...)
}

// ipv4 builds an IPv4 header with options (padded to 4 octets) before l4.
func ipv4(proto uint8, src, dst netip.Addr, options, l4 []byte) []byte {
	for len(options)%4 != 0 {
		options = append(options, 0)
	}
	ihl := 20 + len(options)
	h := make([]byte, 20, ihl+len(l4))
	h[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(h[2:], uint16(ihl+len(l4)))
	binary.BigEndian.PutUint16(h[4:], 0x1234) // identification
	h[6] = 0x40                               // don't fragment
	h[8] = 64
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	h = append(h, options...)
	return append(h, l4...)
}

// ipv6 builds an IPv6 header before the already chained rest (extension
// headers and transport).
func ipv6(next uint8, src, dst netip.Addr, rest []byte) []byte {
	h := make([]byte, 40, 40+len(rest))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(rest)))
	h[6] = next
	h[7] = 64
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, rest...)
}

// ext builds an options-style extension header (hop-by-hop, destination
// options, routing) of 8*units octets, padded with PadN.
func ext(next uint8, units int, rest []byte) []byte {
	h := make([]byte, 8*units)
	h[0] = next
	h[1] = byte(units - 1)
	h[2] = 1 // PadN
	h[3] = byte(len(h) - 4)
	return append(h, rest...)
}

// frag builds a fragment header.
func frag(next uint8, offset uint16, more bool, rest []byte) []byte {
	h := make([]byte, 8)
	h[0] = next
	fo := offset << 3
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(h[2:], fo)
	binary.BigEndian.PutUint32(h[4:], 0xcafe)
	return append(h, rest...)
}

// ah builds an authentication header with a 12-octet ICV.
func ah(next uint8, rest []byte) []byte {
	h := make([]byte, 24)
	h[0] = next
	h[1] = byte(len(h)/4 - 2)
	return append(h, rest...)
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

var mss = []byte{2, 4, 0x05, 0xb4} // MSS 1460

// goodPackets are well-formed packets and what Parse must make of them.
var goodPackets = []struct {
	name string
	b    []byte
	want verdict.Packet
}{
	{
		name: "ipv4 tcp syn",
		b:    ipv4(6, src4, dst4, nil, tcp(40000, 8080, verdict.FlagSYN, cat(mss, []byte{4, 2, 1, 3, 3, 7}), nil)),
		want: verdict.Packet{Src: src4, Dst: dst4, Proto: verdict.TCP, SrcPort: 40000, DstPort: 8080, TCPFlags: verdict.FlagSYN},
	},
	{
		name: "ipv4 tcp psh ack with payload",
		b:    ipv4(6, src4, dst4, nil, tcp(40000, 22, verdict.FlagACK|0x08, nil, []byte("SSH-2.0"))),
		want: verdict.Packet{Src: src4, Dst: dst4, Proto: verdict.TCP, SrcPort: 40000, DstPort: 22, TCPFlags: verdict.FlagACK | 0x08, Payload: []byte("SSH-2.0")},
	},
	{
		name: "ipv4 with options udp",
		b:    ipv4(17, src4, dst4, []byte{7, 7, 4, 0, 0, 0, 0}, udp(5353, 7000, []byte("knock"))),
		want: verdict.Packet{Src: src4, Dst: dst4, Proto: verdict.UDP, SrcPort: 5353, DstPort: 7000, Payload: []byte("knock")},
	},
	{
		name: "ipv4 udp empty",
		b:    ipv4(17, src4, dst4, nil, udp(1, 2, nil)),
		want: verdict.Packet{Src: src4, Dst: dst4, Proto: verdict.UDP, SrcPort: 1, DstPort: 2, Payload: []byte{}},
	},
	{
		name: "ipv4 first fragment",
		b: func() []byte {
			b := ipv4(17, src4, dst4, nil, udp(1000, 2000, []byte("part")))
			b[6] = 0x20 // more fragments, offset 0
			return b
		}(),
		want: verdict.Packet{Src: src4, Dst: dst4, Proto: verdict.UDP, SrcPort: 1000, DstPort: 2000, Payload: []byte("part")},
	},
	{
		name: "ipv6 tcp syn",
		b:    ipv6(6, src6, dst6, tcp(50000, 8080, verdict.FlagSYN, cat(mss, []byte{4, 2}), nil)),
		want: verdict.Packet{Src: src6, Dst: dst6, Proto: verdict.TCP, SrcPort: 50000, DstPort: 8080, TCPFlags: verdict.FlagSYN},
	},
	{
		name: "ipv6 udp",
		b:    ipv6(17, src6, dst6, udp(50000, 7001, []byte("spa-packet"))),
		want: verdict.Packet{Src: src6, Dst: dst6, Proto: verdict.UDP, SrcPort: 50000, DstPort: 7001, Payload: []byte("spa-packet")},
	},
	{
		name: "ipv6 hop-by-hop dest-opts first-fragment udp",
		b: ipv6(protoHopByHop, src6, dst6,
			ext(protoDestOpts, 1,
				ext(protoFragment, 2,
					frag(17, 0, true, udp(1234, 7002, []byte("frag")))))),
		want: verdict.Packet{Src: src6, Dst: dst6, Proto: verdict.UDP, SrcPort: 1234, DstPort: 7002, Payload: []byte("frag")},
	},
	{
		name: "ipv6 routing atomic-fragment ah tcp",
		b: ipv6(protoRouting, src6, dst6,
			ext(protoFragment, 3,
				frag(protoAH, 0, false,
					ah(6, tcp(443, 8443, verdict.FlagSYN|verdict.FlagACK, mss, nil))))),
		want: verdict.Packet{Src: src6, Dst: dst6, Proto: verdict.TCP, SrcPort: 443, DstPort: 8443, TCPFlags: verdict.FlagSYN | verdict.FlagACK},
	},
	{
		name: "ipv6 jumbogram udp",
		b: func() []byte {
			b := ipv6(protoHopByHop, src6, dst6, ext(17, 1, udp(9, 10, []byte("big"))))
			b[4], b[5] = 0, 0 // payload length zero: RFC 2675
			b[40+8+4], b[40+8+5] = 0, 0
			return b
		}(),
		want: verdict.Packet{Src: src6, Dst: dst6, Proto: verdict.UDP, SrcPort: 9, DstPort: 10, Payload: []byte("big")},
	},
}

// badPackets are packets Parse must refuse, and the kind of refusal.
var badPackets = []struct {
	name string
	b    []byte
	kind error
}{
	{"empty", nil, ErrTruncated},
	{"version 5", []byte{0x50, 0, 0, 0}, ErrMalformed},
	{"ipv4 short header", ipv4(6, src4, dst4, nil, nil)[:19], ErrTruncated},
	{"ipv4 options cut", ipv4(6, src4, dst4, make([]byte, 8), nil)[:24], ErrTruncated},
	{"ipv4 ihl 4", func() []byte { b := ipv4(6, src4, dst4, nil, tcp(1, 2, 2, nil, nil)); b[0] = 0x44; return b }(), ErrMalformed},
	{"ipv4 total length below header", func() []byte { b := ipv4(17, src4, dst4, nil, udp(1, 2, nil)); b[2], b[3] = 0, 19; return b }(), ErrMalformed},
	{"ipv4 total length zero", func() []byte { b := ipv4(17, src4, dst4, nil, udp(1, 2, nil)); b[2], b[3] = 0, 0; return b }(), ErrMalformed},
	{"ipv4 non-first fragment", func() []byte { b := ipv4(17, src4, dst4, nil, udp(1, 2, nil)); b[7] = 1; return b }(), ErrUnsupported},
	{"ipv4 icmp", ipv4(1, src4, dst4, nil, []byte{8, 0, 0, 0, 0, 0, 0, 0}), ErrUnsupported},
	{"ipv4 tcp past total length", func() []byte { b := ipv4(6, src4, dst4, nil, tcp(1, 2, 2, nil, nil)); b[3] = 39; return b }(), ErrMalformed},
	{"ipv4 tcp header cut", ipv4(6, src4, dst4, nil, tcp(1, 2, 2, nil, nil))[:39], ErrTruncated},
	{"ipv4 tcp data offset 4", func() []byte { b := ipv4(6, src4, dst4, nil, tcp(1, 2, 2, nil, nil)); b[32] = 0x40; return b }(), ErrMalformed},
	{"ipv4 tcp options past total length", func() []byte { b := ipv4(6, src4, dst4, nil, tcp(1, 2, 2, nil, nil)); b[32] = 0x60; return b }(), ErrMalformed},
	{"ipv4 udp header cut", ipv4(17, src4, dst4, nil, udp(1, 2, nil))[:27], ErrTruncated},
	{"ipv4 udp past total length", func() []byte { b := ipv4(17, src4, dst4, nil, udp(1, 2, nil)); b[3] = 27; return b }(), ErrMalformed},
	{"ipv4 udp length 7", func() []byte { b := ipv4(17, src4, dst4, nil, udp(1, 2, nil)); b[25] = 7; return b }(), ErrMalformed},
	{"ipv4 udp length zero", func() []byte { b := ipv4(17, src4, dst4, nil, udp(1, 2, nil)); b[25] = 0; return b }(), ErrMalformed},
	{"ipv4 udp length past total length", func() []byte { b := ipv4(17, src4, dst4, nil, udp(1, 2, []byte("x"))); b[25] = 10; return b }(), ErrMalformed},
	{"ipv6 short header", ipv6(6, src6, dst6, nil)[:39], ErrTruncated},
	{"ipv6 icmpv6", ipv6(58, src6, dst6, []byte{128, 0, 0, 0, 0, 0, 0, 0}), ErrUnsupported},
	{"ipv6 esp", ipv6(protoESP, src6, dst6, make([]byte, 16)), ErrUnsupported},
	{"ipv6 no next header", ipv6(protoNoNext, src6, dst6, nil), ErrUnsupported},
	{"ipv6 dest-opts then no next header", ipv6(protoDestOpts, src6, dst6, ext(protoNoNext, 1, nil)), ErrUnsupported},
	{"ipv6 unknown extension", ipv6(protoDestOpts, src6, dst6, ext(253, 1, make([]byte, 8))), ErrUnsupported},
	{"ipv6 non-first fragment", ipv6(protoFragment, src6, dst6, frag(17, 185, false, udp(1, 2, nil))), ErrUnsupported},
	{"ipv6 hop-by-hop second", ipv6(protoDestOpts, src6, dst6, ext(protoHopByHop, 1, ext(17, 1, udp(1, 2, nil)))), ErrMalformed},
	{"ipv6 extension past payload length", func() []byte {
		b := ipv6(protoDestOpts, src6, dst6, ext(17, 1, udp(1, 2, nil)))
		b[41] = 3 // 32 octets, the packet has 16
		return b
	}(), ErrMalformed},
	{"ipv6 extension cut", ipv6(protoDestOpts, src6, dst6, ext(17, 2, udp(1, 2, nil)))[:50], ErrTruncated},
	{"ipv6 chain too long", func() []byte {
		rest := udp(1, 2, nil)
		next := uint8(17)
		for range maxExtHeaders + 1 {
			rest = ext(next, 1, rest)
			next = protoDestOpts
		}
		return ipv6(next, src6, dst6, rest)
	}(), ErrUnsupported},
	{"ipv6 payload length zero without hop-by-hop", func() []byte { b := ipv6(17, src6, dst6, udp(1, 2, nil)); b[4], b[5] = 0, 0; return b }(), ErrMalformed},
	{"ipv6 tcp header cut", ipv6(6, src6, dst6, tcp(1, 2, 2, nil, nil))[:55], ErrTruncated},
}

// good and bad return a test packet by name.
func good(name string) []byte {
	for _, tc := range goodPackets {
		if tc.name == name {
			return tc.b
		}
	}
	panic("no good packet " + name)
}

func bad(name string) []byte {
	for _, tc := range badPackets {
		if tc.name == name {
			return tc.b
		}
	}
	panic("no bad packet " + name)
}

func TestParse(t *testing.T) {
	for _, tc := range goodPackets {
		t.Run(tc.name, func(t *testing.T) {
			var p verdict.Packet
			if err := Parse(tc.b, &p); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !samePacket(p, tc.want) {
				t.Errorf("Parse =\n\t%+v, want\n\t%+v", p, tc.want)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range badPackets {
		t.Run(tc.name, func(t *testing.T) {
			var p verdict.Packet
			err := Parse(tc.b, &p)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("Parse = %v, want an error wrapping %v", err, tc.kind)
			}
		})
	}
}

// TestParsePayloadClamp checks that the payload ends where the IP and UDP
// lengths say, not where the buffer does (Ethernet padding, or a UDP length
// shorter than the IP payload).
func TestParsePayloadClamp(t *testing.T) {
	b := append(ipv4(17, src4, dst4, nil, udp(1, 2, []byte("abc"))), "padding"...)
	var p verdict.Packet
	if err := Parse(b, &p); err != nil {
		t.Fatal(err)
	}
	if string(p.Payload) != "abc" {
		t.Errorf("payload %q behind padding, want %q", p.Payload, "abc")
	}
	if cap(p.Payload) != len(p.Payload) {
		t.Errorf("payload capacity %d reaches past its length %d", cap(p.Payload), len(p.Payload))
	}

	b = ipv6(17, src6, dst6, udp(1, 2, []byte("abcdef")))
	binary.BigEndian.PutUint16(b[44:], 8+2) // UDP says 2 bytes of payload
	if err := Parse(b, &p); err != nil {
		t.Fatal(err)
	}
	if string(p.Payload) != "ab" {
		t.Errorf("payload %q, want %q as the udp length says", p.Payload, "ab")
	}

	b = append(ipv4(6, src4, dst4, nil, tcp(1, 2, verdict.FlagACK, mss, []byte("data"))), 0, 0, 0)
	if err := Parse(b, &p); err != nil {
		t.Fatal(err)
	}
	if string(p.Payload) != "data" {
		t.Errorf("tcp payload %q, want %q", p.Payload, "data")
	}
}

// TestParseTruncated cuts every good packet at every length. Cutting only
// removes bytes, it never changes a length field, so Parse must either
// report ErrTruncated or return the same packet with a payload that is a
// prefix of the full one.
func TestParseTruncated(t *testing.T) {
	for _, tc := range goodPackets {
		t.Run(tc.name, func(t *testing.T) {
			for n := range len(tc.b) + 1 {
				checkPrefix(t, tc.b, n, tc.want)
			}
		})
	}
}

func checkPrefix(t *testing.T, b []byte, n int, full verdict.Packet) {
	t.Helper()
	var p verdict.Packet
	err := Parse(b[:n], &p)
	if err != nil {
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("cut at %d of %d: %v, want ErrTruncated", n, len(b), err)
		}
		return
	}
	if !bytes.HasPrefix(full.Payload, p.Payload) {
		t.Fatalf("cut at %d of %d: payload %q is not a prefix of %q", n, len(b), p.Payload, full.Payload)
	}
	p.Payload = full.Payload
	if !samePacket(p, full) {
		t.Fatalf("cut at %d of %d: Parse =\n\t%+v, want\n\t%+v", n, len(b), p, full)
	}
}

func samePacket(a, b verdict.Packet) bool {
	return a.Src == b.Src && a.Dst == b.Dst && a.Proto == b.Proto &&
		a.SrcPort == b.SrcPort && a.DstPort == b.DstPort &&
		a.TCPFlags == b.TCPFlags && bytes.Equal(a.Payload, b.Payload)
}

func TestParseErrorsAreStatic(t *testing.T) {
	// Every refusal is one of the package's prebuilt errors, which is what
	// keeps the error path free of allocations.
	for _, tc := range badPackets {
		var p verdict.Packet
		err := Parse(tc.b, &p)
		if _, ok := err.(*parseError); !ok {
			t.Errorf("%s: error %T %v is not a *parseError", tc.name, err, err)
		}
	}
}

func TestParseAllocs(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"ipv4 tcp", good("ipv4 tcp syn")},
		{"ipv6 udp", good("ipv6 udp")},
		{"ipv6 extension headers", good("ipv6 hop-by-hop dest-opts first-fragment udp")},
		{"malformed", bad("ipv4 tcp data offset 4")},
		{"truncated", good("ipv4 tcp syn")[:30]},
		{"unsupported", bad("ipv6 icmpv6")},
	} {
		var p verdict.Packet
		if n := testing.AllocsPerRun(1000, func() { _ = Parse(tc.b, &p) }); n != 0 {
			t.Errorf("%s: %v allocations per Parse, want 0", tc.name, n)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	for _, bc := range []struct {
		name string
		pkt  []byte
	}{
		{"ipv4-tcp-syn", good("ipv4 tcp syn")},
		{"ipv6-udp", good("ipv6 udp")},
		{"ipv6-ext-udp", good("ipv6 hop-by-hop dest-opts first-fragment udp")},
		{"malformed", bad("ipv4 tcp data offset 4")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			var p verdict.Packet
			for b.Loop() {
				_ = Parse(bc.pkt, &p)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	// The seeds live in testdata/fuzz/FuzzParse; TestFuzzSeeds keeps them
	// in step with goodPackets and badPackets.
	f.Fuzz(func(t *testing.T, b []byte) {
		var p verdict.Packet
		err := Parse(b, &p)
		if err != nil {
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error %v wraps none of the kinds", err)
			}
			return
		}
		if p.Proto != verdict.TCP && p.Proto != verdict.UDP {
			t.Fatalf("proto %v", p.Proto)
		}
		if v := b[0] >> 4; (v == 4) != p.Src.Is4() || (v == 4) != p.Dst.Is4() || (v == 6) != p.Src.Is6() {
			t.Fatalf("version %d gave addresses %v, %v", v, p.Src, p.Dst)
		}
		if p.Proto == verdict.UDP && p.TCPFlags != 0 {
			t.Fatalf("udp packet with tcp flags %#x", p.TCPFlags)
		}
		if len(p.Payload) > 0 && !aliases(b, p.Payload) {
			t.Fatalf("payload does not alias the packet")
		}
		if cap(p.Payload) != len(p.Payload) {
			t.Fatalf("payload capacity %d past its length %d", cap(p.Payload), len(p.Payload))
		}
		checkPrefix(t, b, len(b)-1, p)
		checkPrefix(t, b, len(b)/2, p)
	})
}

// aliases reports whether s is a subslice of b.
func aliases(b, s []byte) bool {
	for i := range len(b) - len(s) + 1 {
		if &b[i] == &s[0] {
			return bytes.Equal(b[i:i+len(s)], s)
		}
	}
	return false
}

// TestFuzzSeeds checks that the seed corpus holds every test packet; run
// with -update-fuzz-seeds to rewrite it.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	seeds := map[string][]byte{}
	for i, tc := range goodPackets {
		seeds[fmt.Sprintf("good-%02d", i)] = tc.b
	}
	for i, tc := range badPackets {
		seeds[fmt.Sprintf("bad-%02d", i)] = tc.b
	}
	for name, b := range seeds {
		want := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
		path := filepath.Join(dir, name)
		if *updateSeeds {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%v (run go test -run TestFuzzSeeds -update-fuzz-seeds ./gate/)", err)
			continue
		}
		if string(got) != want {
			t.Errorf("%s is stale (run go test -run TestFuzzSeeds -update-fuzz-seeds ./gate/)", path)
		}
	}
}
