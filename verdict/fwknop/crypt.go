package fwknop

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/md5"
	"crypto/subtle"
	"encoding/base64"
	"errors"
)

// saltedPrefix is base64 of the first 7½ bytes of OpenSSL's "Salted__"
// header. It begins every ciphertext text; senders strip it and receivers
// put it back, and the HMAC covers the text with it (spec §4.4, §6).
const saltedPrefix = "U2FsdGVkX1"

const (
	saltLen   = 8
	headerLen = 16 // "Salted__" + salt
)

// tag computes the HMAC of "U2FsdGVkX1"+body as unpadded base64 in dst.
// The prefix is added unconditionally: a payload that already carries it
// then fails, which is the second of the spec's two defences (§4.4).
//
// It is RFC 2104 written over the digest's one-shot sum, with the text in
// a stack buffer, because crypto/hmac's New allocates (seven times): a
// server runs this for every well-formed packet and door, forgeries
// included, and its per-packet path allocates nothing. As crypto/hmac and
// libfko do, a key longer than the block is hashed first (spec §6, vectors
// v24). A body longer than MaxPayloadLen, which Prefilter refuses anyway,
// gets an empty tag.
func tag(dst *[maxDigestB64]byte, body, key []byte, d Digest) []byte {
	if len(body) > MaxPayloadLen {
		return nil
	}
	bs := digests[d].block
	var sum [maxDigestSize]byte
	var k [maxBlockSize]byte
	if len(key) > bs {
		key = d.sum(&sum, key)
	}
	copy(k[:], key)
	var in [maxBlockSize + len(saltedPrefix) + MaxPayloadLen]byte
	for i := range bs {
		in[i] = k[i] ^ 0x36
	}
	n := bs + copy(in[bs:], saltedPrefix)
	n += copy(in[n:], body)
	inner := d.sum(&sum, in[:n])
	var out [maxBlockSize + maxDigestSize]byte
	for i := range bs {
		out[i] = k[i] ^ 0x5c
	}
	n = bs + copy(out[bs:], inner)
	base64.RawStdEncoding.Encode(dst[:], d.sum(&sum, out[:n]))
	return dst[:d.EncodedLen()]
}

// VerifyHMAC reports whether payload ends in a valid tag for hmacKey and
// digest d. It is the cheap first test of a door's keys: with several doors
// on one port, a server runs it per door and decrypts only with the keys
// whose HMAC matched (fwknopd tries stanzas the same way, spec §8 step 5).
// The comparison is constant-time. Run Prefilter first.
func VerifyHMAC(payload, hmacKey []byte, d Digest) bool {
	n := d.EncodedLen()
	if n == 0 || len(hmacKey) == 0 || len(payload)-n < minBodyLen {
		return false
	}
	var buf [maxDigestB64]byte
	want := tag(&buf, payload[:len(payload)-n], hmacKey, d)
	return hmac.Equal(want, payload[len(payload)-n:])
}

// deriveKeyIV is OpenSSL's EVP_BytesToKey for AES-256 with MD5 and one
// iteration, which libfko calls "PBKDF1" (spec §4.2):
//
//	D1 = MD5(P‖salt), D2 = MD5(D1‖P‖salt), D3 = MD5(D2‖P‖salt)
//	key = D1‖D2, iv = D3
func deriveKeyIV(pass []byte, salt []byte) (key [32]byte, iv [16]byte) {
	var buf [md5.Size + MaxEncKeyLen + saltLen]byte
	n := copy(buf[md5.Size:], pass)
	n += copy(buf[md5.Size+n:], salt)
	d := md5.Sum(buf[md5.Size : md5.Size+n])
	copy(key[:16], d[:])
	copy(buf[:], d[:])
	d = md5.Sum(buf[:md5.Size+n])
	copy(key[16:], d[:])
	copy(buf[:], d[:])
	iv = md5.Sum(buf[:md5.Size+n])
	return key, iv
}

// legacyPass prepares a passphrase for Legacy mode: cut or right-padded
// with the character '0' (not NUL) to 16 bytes (spec §4.3).
func legacyPass(pass []byte, buf *[16]byte) []byte {
	n := copy(buf[:], pass)
	for i := n; i < len(buf); i++ {
		buf[i] = '0'
	}
	return buf[:]
}

func newCipher(k *Keys, salt []byte) (cipher.Block, [16]byte) {
	pass := k.Enc
	var lb [16]byte
	if k.Mode == Legacy {
		pass = legacyPass(pass, &lb)
	}
	key, iv := deriveKeyIV(pass, salt)
	b, err := aes.NewCipher(key[:])
	if err != nil {
		panic("spa: AES-256 refused a 32-byte key: " + err.Error())
	}
	return b, iv
}

// crypt encrypts or decrypts whole blocks in place. libfko pads with PKCS#7
// in every mode, the stream modes included, so the text is always whole
// blocks. CFB (full-block CFB-128) and OFB are written out here because
// crypto/cipher deprecates its constructors for them; they are a few lines
// on whole blocks.
func crypt(b cipher.Block, mode Mode, iv [16]byte, buf []byte, encrypt bool) {
	const bs = aes.BlockSize
	switch mode {
	case ECB: // the IV is derived but unused
		for i := 0; i < len(buf); i += bs {
			if encrypt {
				b.Encrypt(buf[i:i+bs], buf[i:i+bs])
			} else {
				b.Decrypt(buf[i:i+bs], buf[i:i+bs])
			}
		}
	case CFB:
		prev := iv
		var ks [bs]byte
		for i := 0; i < len(buf); i += bs {
			b.Encrypt(ks[:], prev[:])
			blk := buf[i : i+bs]
			if encrypt {
				subtle.XORBytes(blk, blk, ks[:])
				copy(prev[:], blk)
			} else {
				copy(prev[:], blk)
				subtle.XORBytes(blk, blk, ks[:])
			}
		}
	case OFB:
		ks := iv
		for i := 0; i < len(buf); i += bs {
			b.Encrypt(ks[:], ks[:])
			subtle.XORBytes(buf[i:i+bs], buf[i:i+bs], ks[:])
		}
	case CTR: // the whole IV is one big-endian counter, as in Go
		cipher.NewCTR(b, iv[:]).XORKeyStream(buf, buf)
	default: // CBC, Legacy
		if encrypt {
			cipher.NewCBCEncrypter(b, iv[:]).CryptBlocks(buf, buf)
		} else {
			cipher.NewCBCDecrypter(b, iv[:]).CryptBlocks(buf, buf)
		}
	}
}

// unpad strips strict PKCS#7 padding. libfko keeps malformed padding
// silently; the spec recommends strict checking, since genuine packets
// always carry valid padding (§4.3).
func unpad(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, errors.New("empty plaintext")
	}
	n := int(b[len(b)-1])
	if n == 0 || n > aes.BlockSize || n > len(b) {
		return nil, errors.New("bad padding")
	}
	for _, c := range b[len(b)-n:] {
		if int(c) != n {
			return nil, errors.New("bad padding")
		}
	}
	return b[:len(b)-n], nil
}

// pad appends PKCS#7 padding: 1–16 bytes, a whole block when the text is
// already a multiple of 16.
func pad(b []byte) []byte {
	n := aes.BlockSize - len(b)%aes.BlockSize
	for range n {
		b = append(b, byte(n))
	}
	return b
}
