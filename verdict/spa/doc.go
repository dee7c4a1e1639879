// Package spa owns the fwknop Single Packet Authorization wire format: it
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
// VerifyHMAC and DecodeAny (several doors' keys on one port), and the
// allow IP, ports, NAT and timeout fields of a Message.
//
// A server checks a payload in this order, which is fwknopd's and is also
// the order of the errors Decode returns, so callers can count failures by
// stage: Prefilter (ErrMalformed, no cryptography, no allocation), the HMAC
// (ErrHMAC), AES decryption (ErrDecrypt), the inner digest (ErrDigest), the
// fields (ErrFields; a plaintext with non-printable bytes fails this way
// before its digest is checked). GPG-encrypted SPA (spec §12) is out of
// scope.
package spa
