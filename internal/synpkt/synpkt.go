// Package synpkt writes raw TCP SYN packets, IPv4 and IPv6, with their TCP
// checksums, for the senders that flood the gate with spoofed sources
// through raw sockets: the bench's load generator and the integration
// tests. The daemon never uses it.
package synpkt

import (
	"encoding/binary"
	"math/rand/v2"

	"golang.org/x/sys/unix"
)

// Lengths of the packets IPv4 and IPv6 write.
const (
	Len4 = 40
	Len6 = 60
)

// IPv4 writes an IPv4 TCP SYN (20-byte IP header, 20-byte TCP header) into
// b, which holds at least Len4 bytes. The kernel fills in the IP checksum
// of an IP_HDRINCL packet; the TCP checksum is ours.
func IPv4(b []byte, src, dst [4]byte, sport, dport uint16) {
	clear(b[:Len4])
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], Len4)
	b[6] = 0x40 // DF
	b[8], b[9] = 64, unix.IPPROTO_TCP
	copy(b[12:16], src[:])
	copy(b[16:20], dst[:])
	tcpSYN(b[20:40], b[12:20], sport, dport)
}

// IPv6 writes an IPv6 TCP SYN (40-byte IPv6 header, 20-byte TCP header)
// into b, which holds at least Len6 bytes.
func IPv6(b []byte, src, dst [16]byte, sport, dport uint16) {
	clear(b[:Len6])
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], 20)
	b[6], b[7] = unix.IPPROTO_TCP, 64
	copy(b[8:24], src[:])
	copy(b[24:40], dst[:])
	tcpSYN(b[40:60], b[8:40], sport, dport)
}

// tcpSYN writes a 20-byte TCP SYN with a random sequence number and its
// checksum, over the pseudo-header of addrs (source and destination
// address, as they stand in the IP header), the protocol and the TCP
// length.
func tcpSYN(tcp, addrs []byte, sport, dport uint16) {
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], rand.Uint32())
	tcp[12], tcp[13] = 5<<4, 0x02
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	sum := uint32(20 + unix.IPPROTO_TCP)
	for i := 0; i < len(addrs); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(addrs[i:]))
	}
	for i := 0; i+1 < len(tcp); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(tcp[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(tcp[16:], ^uint16(sum))
}
