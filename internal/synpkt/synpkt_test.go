package synpkt

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/knockgate/knockgate/gate"
	"github.com/knockgate/knockgate/verdict"
)

// verifies reports whether the TCP checksum of seg, over the pseudo-header
// of addrs, checks out: the one's-complement sum of it all is 0xffff.
func verifies(seg, addrs []byte) bool {
	sum := uint32(len(seg) + unix.IPPROTO_TCP)
	for _, b := range [][]byte{addrs, seg} {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}

// The SYNs written are what the gate must see: bare SYNs with the
// addresses and ports asked for, and a TCP checksum the gateway's stack
// accepts (a bad one would be dropped before any SYN-ACK or RST, and
// measure nothing).
func TestSYN(t *testing.T) {
	src4, dst4 := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("203.0.113.1")
	src6, dst6 := netip.MustParseAddr("2001:db8:ff00::7"), netip.MustParseAddr("2001:db8:1::1")
	b4 := make([]byte, Len4)
	IPv4(b4, src4.As4(), dst4.As4(), 40001, 8080)
	b6 := make([]byte, Len6)
	IPv6(b6, src6.As16(), dst6.As16(), 40002, 7000)
	for _, tc := range []struct {
		name     string
		b        []byte
		src, dst netip.Addr
		sport    uint16
		dport    uint16
		seg      []byte
		addrs    []byte
	}{
		{"ipv4", b4, src4, dst4, 40001, 8080, b4[20:], b4[12:20]},
		{"ipv6", b6, src6, dst6, 40002, 7000, b6[40:], b6[8:40]},
	} {
		var p verdict.Packet
		if err := gate.Parse(tc.b, &p); err != nil {
			t.Fatalf("%s: gate refuses the SYN: %v", tc.name, err)
		}
		if p.Proto != verdict.TCP || p.Src != tc.src || p.Dst != tc.dst || p.SrcPort != tc.sport || p.DstPort != tc.dport ||
			p.TCPFlags&(verdict.FlagSYN|verdict.FlagACK) != verdict.FlagSYN {
			t.Errorf("%s: gate sees %+v", tc.name, p)
		}
		if !verifies(tc.seg, tc.addrs) {
			t.Errorf("%s: bad TCP checksum", tc.name)
		}
	}
}
