package gate

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/knockgate/knockgate/verdict"
)

// The kinds of parse failure. Parse returns errors that wrap exactly one of
// these, so callers can tell them apart with errors.Is; the queue itself
// drops all three alike.
var (
	// ErrTruncated: a header Parse needs lies beyond the bytes copied to
	// user space (a short Config.CopyRange, or a short packet).
	ErrTruncated = errors.New("packet truncated")
	// ErrMalformed: the headers contradict each other or the RFCs.
	ErrMalformed = errors.New("malformed packet")
	// ErrUnsupported: a well-formed packet the gate cannot judge, such as
	// ICMP, ESP or a non-first fragment.
	ErrUnsupported = errors.New("unsupported packet")
)

// parseError adds detail to one of the kinds above. Every parseError is a
// package-level value built at init, so the error path allocates nothing: a
// flood of garbage costs no more than a flood of good packets.
type parseError struct {
	kind error
	msg  string
}

func newParseError(kind error, detail string) *parseError {
	return &parseError{kind: kind, msg: kind.Error() + ": " + detail}
}

func (e *parseError) Error() string { return e.msg }
func (e *parseError) Unwrap() error { return e.kind }

var (
	errEmpty        = newParseError(ErrTruncated, "no ip header")
	errVersion      = newParseError(ErrMalformed, "ip version is neither 4 nor 6")
	errIPv4Header   = newParseError(ErrTruncated, "ipv4 header")
	errIPv4IHL      = newParseError(ErrMalformed, "ipv4 header length below 20 bytes")
	errIPv4Length   = newParseError(ErrMalformed, "ipv4 total length shorter than its header")
	errFragment     = newParseError(ErrUnsupported, "non-first fragment")
	errProto        = newParseError(ErrUnsupported, "transport is neither tcp nor udp")
	errIPv6Header   = newParseError(ErrTruncated, "ipv6 header")
	errExtHeader    = newParseError(ErrTruncated, "ipv6 extension header")
	errExtLength    = newParseError(ErrMalformed, "ipv6 extension header runs past the payload length")
	errHopByHop     = newParseError(ErrMalformed, "ipv6 hop-by-hop options not directly after the fixed header")
	errExtChain     = newParseError(ErrUnsupported, "too many ipv6 extension headers")
	errESP          = newParseError(ErrUnsupported, "esp-encrypted payload")
	errNoNextHeader = newParseError(ErrUnsupported, "ipv6 no next header")
	errTCPHeader    = newParseError(ErrTruncated, "tcp header")
	errTCPLength    = newParseError(ErrMalformed, "tcp header runs past the ip packet")
	errTCPOffset    = newParseError(ErrMalformed, "tcp data offset below 5")
	errUDPHeader    = newParseError(ErrTruncated, "udp header")
	errUDPLength    = newParseError(ErrMalformed, "udp header runs past the ip packet")
	errUDPShortLen  = newParseError(ErrMalformed, "udp length below 8")
	errUDPLongLen   = newParseError(ErrMalformed, "udp length runs past the ip packet")
)

// IP protocol and IPv6 next-header numbers (IANA "Assigned Internet
// Protocol Numbers"; RFC 8200 §4 for the extension headers).
const (
	protoHopByHop = 0
	protoRouting  = 43
	protoFragment = 44
	protoESP      = 50
	protoAH       = 51
	protoNoNext   = 59
	protoDestOpts = 60
)

const (
	ipv4MinHeader = 20
	ipv6Header    = 40
	tcpMinHeader  = 20
	udpHeader     = 8

	// maxExtHeaders bounds the IPv6 extension header walk. RFC 8200 §4.1
	// allows each header once (destination options twice), which makes six;
	// anything longer is not a packet a real stack sends to a gate.
	maxExtHeaders = 8

	// unknownEnd stands for the end of a packet whose IP header gives no
	// length (a jumbogram): beyond any buffer, so only len(b) limits.
	unknownEnd = 1 << 30
)

// Parse fills p from a raw IP packet as NFQUEUE delivers it: starting at the
// IPv4 or IPv6 header, and possibly cut short at the queue's copy range.
// Only the headers Parse reads must be present; p.Payload holds as much of
// the transport payload as was copied and aliases b.
//
// Parse never allocates and never panics. On error p holds whatever was
// parsed before the failure (the addresses, often) and must not be decided
// on; the error wraps ErrTruncated, ErrMalformed or ErrUnsupported.
func Parse(b []byte, p *verdict.Packet) error {
	*p = verdict.Packet{}
	if len(b) == 0 {
		return errEmpty
	}
	switch b[0] >> 4 {
	case 4:
		return parseIPv4(b, p)
	case 6:
		return parseIPv6(b, p)
	}
	return errVersion
}

// parseIPv4 follows RFC 791 §3.1.
func parseIPv4(b []byte, p *verdict.Packet) error {
	if len(b) < ipv4MinHeader {
		return errIPv4Header
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < ipv4MinHeader {
		return errIPv4IHL
	}
	if len(b) < ihl {
		return errIPv4Header
	}
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))

	// The kernel's ip_rcv_core drops packets whose total length is below
	// the header length before PREROUTING, and nfnetlink_queue segments GSO
	// packets (we do not set NFQA_CFG_F_GSO), so a queued packet always
	// carries its true length: anything else is refused.
	end := int(binary.BigEndian.Uint16(b[2:4]))
	if end < ihl {
		return errIPv4Length
	}

	// Conntrack reassembles fragments (nf_defrag_ipv4 hooks PREROUTING at
	// priority -400, ahead of mangle at -150), so behind a "-m conntrack"
	// rule no fragment should reach us. Should one arrive anyway, a
	// non-first fragment carries no transport header to judge; the first
	// fragment does, and is parsed like any packet.
	if binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
		return errFragment
	}
	return parseTransport(b, ihl, end, verdict.Proto(b[9]), false, p)
}

// parseIPv6 follows RFC 8200 §3 and §4.
func parseIPv6(b []byte, p *verdict.Packet) error {
	if len(b) < ipv6Header {
		return errIPv6Header
	}
	p.Src = netip.AddrFrom16([16]byte(b[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(b[24:40]))

	next := b[6]
	end := ipv6Header + int(binary.BigEndian.Uint16(b[4:6]))
	// A payload length of zero with hop-by-hop options next is a jumbogram
	// (RFC 2675 §3): the real length is in a hop-by-hop option, and the
	// kernel's ipv6_rcv lets such a packet through untrimmed. We do not
	// read that option; the end is unknown, and only the copied bytes
	// bound what we parse.
	jumbo := end == ipv6Header && next == protoHopByHop
	if jumbo {
		end = unknownEnd
	}

	off := ipv6Header
	for i := 0; ; i++ {
		var n int // length of this extension header
		switch next {
		case byte(verdict.TCP), byte(verdict.UDP):
			return parseTransport(b, off, end, verdict.Proto(next), jumbo, p)
		case protoESP:
			return errESP
		case protoNoNext:
			return errNoNextHeader
		case protoHopByHop, protoRouting, protoDestOpts, protoFragment, protoAH:
		default:
			return errProto
		}
		if i == maxExtHeaders {
			return errExtChain
		}
		// Hop-by-hop options may only follow the fixed header (RFC 8200
		// §4.3); the kernel refuses them anywhere else.
		if next == protoHopByHop && i != 0 {
			return errHopByHop
		}
		// Every extension header starts with next header and a length
		// byte, and is at least 8 octets long.
		if off+8 > end {
			return errExtLength
		}
		if off+8 > len(b) {
			return errExtHeader
		}
		switch next {
		case protoFragment:
			// Fixed 8 octets (RFC 8200 §4.5). As with IPv4, conntrack
			// reassembles fragments (nf_defrag_ipv6) and removes the
			// fragment header before us; what remains is an atomic
			// fragment (RFC 6946) or a first fragment, both parseable.
			n = 8
			if binary.BigEndian.Uint16(b[off+2:off+4])&0xfff8 != 0 {
				return errFragment
			}
		case protoAH:
			// AH counts 4-octet units, minus 2 (RFC 4302 §2.2).
			n = (int(b[off+1]) + 2) * 4
		default:
			// 8-octet units, not counting the first 8 (RFC 8200 §4.3-4.6).
			n = (int(b[off+1]) + 1) * 8
		}
		if off+n > end {
			return errExtLength
		}
		if off+n > len(b) {
			return errExtHeader
		}
		next = b[off]
		off += n
	}
}

// parseTransport reads the TCP or UDP header at b[off:]. end is where the IP
// header says the packet ends; it may lie beyond len(b) when the copy was
// cut short. A header that does not fit within end is malformed; one that
// fits within end but not within b is truncated.
func parseTransport(b []byte, off, end int, proto verdict.Proto, jumbo bool, p *verdict.Packet) error {
	p.Proto = proto
	avail := min(end, len(b))
	var start, stop int // payload bounds
	switch proto {
	case verdict.TCP:
		if off+tcpMinHeader > end {
			return errTCPLength
		}
		if off+tcpMinHeader > len(b) {
			return errTCPHeader
		}
		doff := int(b[off+12]>>4) * 4
		if doff < tcpMinHeader {
			return errTCPOffset
		}
		if off+doff > end {
			return errTCPLength
		}
		p.SrcPort = binary.BigEndian.Uint16(b[off : off+2])
		p.DstPort = binary.BigEndian.Uint16(b[off+2 : off+4])
		p.TCPFlags = b[off+13]
		// Options cut off by the copy range leave an empty payload; the
		// ports and flags are all the engine needs of a SYN.
		start, stop = min(off+doff, avail), avail
	case verdict.UDP:
		if off+udpHeader > end {
			return errUDPLength
		}
		if off+udpHeader > len(b) {
			return errUDPHeader
		}
		ulen := int(binary.BigEndian.Uint16(b[off+4 : off+6]))
		if ulen == 0 && jumbo {
			// RFC 2675 §4: a jumbo UDP datagram has length zero.
			ulen = end - off
		}
		if ulen < udpHeader {
			return errUDPShortLen
		}
		if off+ulen > end {
			return errUDPLongLen
		}
		p.SrcPort = binary.BigEndian.Uint16(b[off : off+2])
		p.DstPort = binary.BigEndian.Uint16(b[off+2 : off+4])
		start, stop = off+udpHeader, min(off+ulen, avail)
	default:
		return errProto
	}
	// The full slice expression stops an append to the payload from
	// writing over whatever follows it in the receive buffer.
	p.Payload = b[start:stop:stop]
	return nil
}
