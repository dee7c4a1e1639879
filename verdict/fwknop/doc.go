// Package fwknop owns the fwknop Single Packet Authorization wire format: it
// turns one SPA payload into a checked Message and back.
//
// It follows the project's implementation spec "fwknop Single Packet
// Authorization (SPA) wire format" (fwknop-spa.md; section numbers in
// comments, such as §9, refer to it), which describes what the stock fwknop
// 2.6.10 client sends and what libfko and fwknopd 2.6.10 accept. The 41
// vectors that came with it, made by the real client, are replayed by the
// tests from testdata/fwknop-vectors.json.
//
// The package is a pure codec: no I/O, no clocks, no goroutines, no state.
// Time comes in as an argument (Message.CheckAge), randomness as an
// io.Reader (EncodeRandom, GenerateKeys). What it does not own: the replay
// cache, the age window, the source-address and port policy and the
// per-door key choice. Those belong to the engine, which gets from here the
// pieces it needs for them: ReplayKey (computed before any cryptography),
// VerifyHMAC (which of several doors on one port the packet is for), and
// the allow IP, ports, NAT and timeout fields of a Message.
//
// A server checks a payload in this order, which is fwknopd's and is also
// the order of the errors Decode returns, so callers can count failures by
// stage: Prefilter (ErrMalformed, no cryptography, no allocation), the HMAC
// (ErrHMAC), AES decryption (ErrDecrypt), the inner digest (ErrDigest), the
// fields (ErrFields; a plaintext with non-printable bytes fails this way
// before its digest is checked). GPG-encrypted SPA (spec §12) is out of
// scope.
//
// # The one extension: IPv6 allow IPs
//
// In exactly one place this package leaves fwknop's format: the allow IP at
// the head of the message field may be an IPv6 address as well as
// fwknop's dotted quad (spec §3.3 allows only the latter). fwknop 2.6 has
// no way to ask for access for an IPv6 source, while knockgate gates both
// families; knockgate's own client ("knockgate spa") writes the IPv6
// address it sends from. The address is hex digits and colons only (no
// zone, no dotted or IPv4-mapped form, not "::"), so an IPv4 client is
// always written as a dotted quad and each address has one spelling.
//
// Compatibility is unaffected in both directions. The stock client never
// writes an IPv6 allow IP, so everything it sends decodes exactly as
// before, and every payload it can send is still accepted (the 41 vectors
// pass unchanged). A packet with an IPv6 allow IP is refused by fwknopd and
// libfko, which is expected: only a knockgate server is meant to read one.
package fwknop
