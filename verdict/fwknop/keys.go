package fwknop

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Errors. Decode and Prefilter return errors that wrap exactly one of the
// stage sentinels ErrMalformed, ErrHMAC, ErrDecrypt, ErrDigest or ErrFields,
// so a caller can count rejections by stage with errors.Is; the wrapped text
// says what exactly was wrong. Prefilter's errors are built once, so
// rejecting garbage does not allocate.
var (
	// ErrMalformed: the payload is not SPA text at all (length, alphabet,
	// prefix); no cryptography was done.
	ErrMalformed = errors.New("malformed SPA payload")
	// ErrPrefix: the payload starts with the "U2FsdGVkX1" prefix that
	// senders strip. fwknopd drops these before any cryptography because
	// re-adding the prefix to a captured packet gives a new replay-cache key
	// for the same HMAC input (spec §4.4). It wraps ErrMalformed.
	ErrPrefix = fmt.Errorf("%w: starts with the U2FsdGVkX1 prefix that senders strip", ErrMalformed)
	// ErrHMAC: the HMAC tag does not match. A wrong HMAC digest type looks
	// exactly the same (spec §6).
	ErrHMAC = errors.New("SPA HMAC verification failed")
	// ErrDecrypt: the ciphertext did not decrypt to an SPA plaintext: wrong
	// encryption key or mode, or corrupted data.
	ErrDecrypt = errors.New("SPA decryption failed (bad key or corrupted data)")
	// ErrDigest: the inner digest does not match the plaintext.
	ErrDigest = errors.New("SPA inner digest does not match")
	// ErrFields: the plaintext decrypted but its fields break libfko's
	// rules.
	ErrFields = errors.New("invalid SPA fields")
	// ErrKeys: the keys are unusable; a configuration error, not a packet
	// error.
	ErrKeys = errors.New("invalid SPA keys")
	// ErrAge: the timestamp is outside the allowed window (CheckAge).
	ErrAge = errors.New("SPA timestamp outside the allowed window")
)

// Key limits (spec §4.1, §6).
const (
	// MaxEncKeyLen: libfko refuses longer passphrases ("Invalid key
	// length").
	MaxEncKeyLen = 32
	// MaxHMACKeyLen is the client's limit; a longer key could never be used
	// by the stock client.
	MaxHMACKeyLen = 128
)

// Keys is one door's (one fwknopd stanza's) key material.
type Keys struct {
	// Enc is the encryption passphrase as bytes: KEY as typed, or KEY_BASE64
	// decoded (DecodeKey). 1–32 bytes. It is not the AES key: it goes
	// through OpenSSL's EVP_BytesToKey with the packet's salt, and the cipher
	// is always AES-256 (spec §4.2).
	Enc []byte
	// HMAC is the HMAC key: HMAC_KEY as typed, or HMAC_KEY_BASE64 decoded.
	// It must differ from Enc.
	HMAC []byte
	// HMACDigest is the stanza's HMAC_DIGEST_TYPE. It decides how many
	// trailing characters are the tag; it cannot be learnt from the packet.
	HMACDigest Digest
	// Mode is the stanza's ENCRYPTION_MODE.
	Mode Mode
	// AllowNoHMAC permits an empty HMAC key, so that packets are taken
	// without any authentication beyond the encryption itself, as fwknop
	// 2.x still allows. Without an HMAC the replay cache can be bypassed
	// and tampering is caught only by luck (spec §6, §9). It exists for the
	// test vectors and for migrations; leave it false.
	AllowNoHMAC bool
}

// Validate reports whether the keys are usable, as libfko and fwknopd
// check them. Decode and Encode call it; a configuration loader should too,
// so that a bad key is reported at start-up and not per packet.
func (k *Keys) Validate() error {
	switch {
	case len(k.Enc) == 0:
		return fmt.Errorf("%w: the encryption key is empty", ErrKeys)
	case len(k.Enc) > MaxEncKeyLen:
		return fmt.Errorf("%w: the encryption key is %d bytes, more than libfko's %d", ErrKeys, len(k.Enc), MaxEncKeyLen)
	case len(k.HMAC) == 0 && !k.AllowNoHMAC:
		return fmt.Errorf("%w: no HMAC key (an HMAC is required unless AllowNoHMAC is set)", ErrKeys)
	case len(k.HMAC) > MaxHMACKeyLen:
		return fmt.Errorf("%w: the HMAC key is %d bytes, more than the client's %d", ErrKeys, len(k.HMAC), MaxHMACKeyLen)
	case len(k.HMAC) > 0 && bytes.Equal(k.Enc, k.HMAC):
		// The client and fwknopd both refuse this (spec §4.1).
		return fmt.Errorf("%w: the encryption and HMAC keys are the same", ErrKeys)
	case !k.HMACDigest.valid():
		return fmt.Errorf("%w: unknown HMAC digest %v", ErrKeys, k.HMACDigest)
	case !k.Mode.valid():
		return fmt.Errorf("%w: unknown encryption mode %v", ErrKeys, k.Mode)
	}
	return nil
}

// DecodeKey decodes a KEY_BASE64 or HMAC_KEY_BASE64 value. fwknop prints
// these as padded standard base64 (spec §2); the padding is optional here.
// The result is binary and may contain NULs.
func DecodeKey(s string) ([]byte, error) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("key is not base64: %w", err)
	}
	return b, nil
}

// Key lengths fwknop --key-gen uses (spec §6). fwknop has no rule for the
// SHA-3 types; 64 bytes is our choice, above both digests' output sizes.
const genEncKeyLen = 32

func genHMACKeyLen(d Digest) int {
	switch d {
	case MD5:
		return 16
	case SHA1:
		return 20
	case SHA384, SHA512:
		return 128
	}
	return 64
}

// GenerateKeys makes a random key pair as `fwknop --key-gen` does for the
// default HMAC-SHA256: a 32-byte encryption key and a 64-byte HMAC key, as
// padded base64 ready for KEY_BASE64 and HMAC_KEY_BASE64.
func GenerateKeys(rand io.Reader) (encB64, hmacB64 string, err error) {
	return GenerateKeysFor(rand, SHA256)
}

// GenerateKeysFor is GenerateKeys for another HMAC digest; like fwknop it
// sizes the HMAC key by digest (16 bytes for MD5, 20 for SHA-1, 128 for
// SHA-384 and SHA-512, 64 otherwise).
func GenerateKeysFor(rand io.Reader, d Digest) (encB64, hmacB64 string, err error) {
	if !d.valid() {
		return "", "", fmt.Errorf("%w: unknown HMAC digest %v", ErrKeys, d)
	}
	buf := make([]byte, genEncKeyLen+genHMACKeyLen(d))
	if _, err := io.ReadFull(rand, buf); err != nil {
		return "", "", fmt.Errorf("failed to read random key bytes: %w", err)
	}
	// The two keys always differ in length, so they can never be the same
	// bytes, which Validate refuses.
	enc, mac := buf[:genEncKeyLen], buf[genEncKeyLen:]
	return base64.StdEncoding.EncodeToString(enc), base64.StdEncoding.EncodeToString(mac), nil
}

// FormatKeys prints a key pair the way `fwknop --key-gen` does, two lines
// an access.conf stanza or .fwknoprc takes as they are.
func FormatKeys(encB64, hmacB64 string) string {
	return "KEY_BASE64: " + encB64 + "\nHMAC_KEY_BASE64: " + hmacB64 + "\n"
}
