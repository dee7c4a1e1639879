package cluster

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
)

// KeySize is the size of keys NewKey makes: AES-256-GCM.
const KeySize = 32

// NewKey returns a new random cluster key, for `knockgate keygen --kind
// cluster`.
func NewKey() []byte {
	k := make([]byte, KeySize)
	rand.Read(k) // never fails (crypto/rand, Go 1.24)
	return k
}

// FormatKey returns a key file's content: the key in standard base64 on
// one line.
func FormatKey(key []byte) []byte {
	return []byte(base64.StdEncoding.EncodeToString(key) + "\n")
}

// ParseKey parses a key file's content: base64 of 16, 24 or 32 bytes on one
// line, surrounding white space ignored.
func ParseKey(b []byte) ([]byte, error) {
	s := bytes.TrimSpace(b)
	if len(s) == 0 {
		return nil, fmt.Errorf("cluster key is empty: want base64 of %d random bytes, as `knockgate keygen --kind cluster` writes", KeySize)
	}
	if bytes.ContainsAny(s, "\r\n") {
		return nil, fmt.Errorf("cluster key has more than one line: want base64 of %d random bytes on one line", KeySize)
	}
	key := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(key, s)
	if err != nil {
		return nil, fmt.Errorf("cluster key is not base64: %w", err)
	}
	key = key[:n]
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("cluster key is %d bytes, want 16, 24 or 32 (AES-GCM)", len(key))
}

// ReadKeyFile reads and parses a key file.
func ReadKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read cluster key: %w", err)
	}
	key, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("failed to read cluster key %s: %w", path, err)
	}
	return key, nil
}
