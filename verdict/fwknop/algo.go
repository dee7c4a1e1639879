package fwknop

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/sha512"
	"fmt"
	"strconv"
	"strings"
)

// Digest is a hash algorithm fwknop uses, both for the HMAC (client
// --hmac-digest-type, stanza HMAC_DIGEST_TYPE) and for the inner digest
// (client -m/--digest-type). The zero value is SHA256, fwknop's default for
// both.
type Digest uint8

// Digests, with fwknop's names.
const (
	SHA256   Digest = iota // "sha256", the default
	MD5                    // "md5"
	SHA1                   // "sha1"
	SHA384                 // "sha384"
	SHA512                 // "sha512"
	SHA3_256               // "sha3_256"
	SHA3_512               // "sha3_512"
	numDigests
)

var digests = [numDigests]struct {
	name  string
	size  int // raw bytes
	b64   int // characters of unpadded base64 (spec §5 table)
	block int // the HMAC block size: the hash's block, or SHA-3's rate
}{
	SHA256:   {"sha256", 32, 43, 64},
	MD5:      {"md5", 16, 22, 64},
	SHA1:     {"sha1", 20, 27, 64},
	SHA384:   {"sha384", 48, 64, 128},
	SHA512:   {"sha512", 64, 86, 128},
	SHA3_256: {"sha3_256", 32, 43, 136},
	SHA3_512: {"sha3_512", 64, 86, 72},
}

// maxDigestSize, maxDigestB64 and maxBlockSize size stack buffers for any
// digest.
const (
	maxDigestSize = 64
	maxDigestB64  = 86
	maxBlockSize  = 136
)

func (d Digest) valid() bool { return d < numDigests }

func (d Digest) String() string {
	if d.valid() {
		return digests[d].name
	}
	return "digest(" + strconv.Itoa(int(d)) + ")"
}

// Size is the digest's length in bytes.
func (d Digest) Size() int {
	if !d.valid() {
		return 0
	}
	return digests[d].size
}

// EncodedLen is the digest's length on the wire: unpadded base64
// characters. For the HMAC it is how many characters at the end of a payload
// are the tag.
func (d Digest) EncodedLen() int {
	if !d.valid() {
		return 0
	}
	return digests[d].b64
}

// ParseDigest parses fwknop's names: md5, sha1, sha256, sha384, sha512,
// sha3_256, sha3_512. Case does not matter and "sha3-256" is accepted too.
func ParseDigest(s string) (Digest, error) {
	n := strings.ReplaceAll(strings.ToLower(s), "-", "_")
	for d := range numDigests {
		if digests[d].name == n {
			return d, nil
		}
	}
	return 0, fmt.Errorf("digest %q is not one of md5, sha1, sha256, sha384, sha512, sha3_256, sha3_512", s)
}

// sum hashes data into out without allocating and returns the digest.
func (d Digest) sum(out *[maxDigestSize]byte, data []byte) []byte {
	switch d {
	case MD5:
		s := md5.Sum(data)
		return out[:copy(out[:], s[:])]
	case SHA1:
		s := sha1.Sum(data)
		return out[:copy(out[:], s[:])]
	case SHA384:
		s := sha512.Sum384(data)
		return out[:copy(out[:], s[:])]
	case SHA512:
		s := sha512.Sum512(data)
		return out[:copy(out[:], s[:])]
	case SHA3_256:
		s := sha3.Sum256(data)
		return out[:copy(out[:], s[:])]
	case SHA3_512:
		s := sha3.Sum512(data)
		return out[:copy(out[:], s[:])]
	}
	s := sha256.Sum256(data)
	return out[:copy(out[:], s[:])]
}

// innerDigestCandidates lists the algorithms an inner digest of n base64
// characters may be, in the order libfko tries them: the length is the only
// clue, and 43 and 86 characters are ambiguous between SHA-2 and SHA-3
// (spec §5).
func innerDigestCandidates(n int) []Digest {
	switch n {
	case 22:
		return []Digest{MD5}
	case 27:
		return []Digest{SHA1}
	case 43:
		return []Digest{SHA256, SHA3_256}
	case 64:
		return []Digest{SHA384}
	case 86:
		return []Digest{SHA512, SHA3_512}
	}
	return nil
}

// Mode is the AES mode of a stanza's ENCRYPTION_MODE (client -M). The zero
// value is CBC, fwknop's default. Client and server must agree: the mode is
// not on the wire.
type Mode uint8

// Modes (spec §4.3). PCBC is named by libfko but not supported by it.
const (
	CBC Mode = iota
	ECB
	CFB
	OFB
	CTR
	// Legacy is CBC with the passphrase right-padded with ASCII '0' (or cut)
	// to 16 bytes first, for servers older than 2.5. The client refuses it
	// together with an HMAC.
	Legacy
	numModes
)

var modeNames = [numModes]string{
	CBC:    "cbc",
	ECB:    "ecb",
	CFB:    "cfb",
	OFB:    "ofb",
	CTR:    "ctr",
	Legacy: "legacy",
}

func (m Mode) valid() bool { return m < numModes }

func (m Mode) String() string {
	if m.valid() {
		return modeNames[m]
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

// ParseMode parses fwknop's ENCRYPTION_MODE names: cbc, ecb, cfb, ofb, ctr,
// legacy, in any case.
func ParseMode(s string) (Mode, error) {
	n := strings.ToLower(s)
	for m := range numModes {
		if modeNames[m] == n {
			return m, nil
		}
	}
	return 0, fmt.Errorf("encryption mode %q is not one of cbc, ecb, cfb, ofb, ctr, legacy", s)
}
