package rules

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"

	"github.com/knockgate/knockgate/verdict"
	"github.com/knockgate/knockgate/verdict/fwknop"
)

// Defaults of an spa block, fwknopd's where it has one.
const (
	DefaultSPAPort   = "udp/62201"
	DefaultSPAMaxAge = 120 * time.Second
)

// spaBlock reads a door's spa block. It returns nil when the block has
// errors, which are reported; the range is where the port is named, for
// the checks across doors.
func (c *compiler) spaBlock(door string, b *hcl.Block, body hcl.Body) (*verdict.SPA, *hcl.Range) {
	var raw rawSPA
	diags := gohcl.DecodeBody(body, nil, &raw)
	c.diags = append(c.diags, diags...)
	if diags.HasErrors() {
		return nil, nil
	}
	blockRange := nestedRange(b, "spa")
	ok := true
	s := &verdict.SPA{MaxAge: DefaultSPAMaxAge, Keys: fwknop.Keys{HMACDigest: fwknop.SHA256, Mode: fwknop.CBC}}

	s.Port, _ = verdict.ParsePort(DefaultSPAPort)
	portRange := blockRange.Ptr()
	if present(raw.Port) {
		portRange = raw.Port.Expr.Range().Ptr()
		if str, sok := c.str(raw.Port.Expr, &raw.Port.Range, "spa port"); !sok {
			ok = false
		} else if p, err := verdict.ParsePort(str); err != nil {
			c.errorf(portRange, &raw.Port.Range, err.Error()+".", "invalid spa port %q in door %q", str, door)
			ok = false
		} else if p.Proto != verdict.UDP {
			c.errorf(portRange, &raw.Port.Range,
				"The stock fwknop client sends SPA packets as one UDP datagram; knockgate listens for them on UDP only.",
				"spa port %q of door %q is not udp", str, door)
			ok = false
		} else {
			s.Port = p
		}
	}

	if present(raw.HMACDigest) {
		if str, sok := c.str(raw.HMACDigest.Expr, &raw.HMACDigest.Range, "hmac_digest"); !sok {
			ok = false
		} else if d, err := fwknop.ParseDigest(str); err != nil {
			c.errorf(raw.HMACDigest.Expr.Range().Ptr(), &raw.HMACDigest.Range,
				fmt.Sprintf("As the fwknop client's --hmac-digest-type: %v.", err),
				"invalid hmac_digest %q in door %q", str, door)
			ok = false
		} else {
			s.Keys.HMACDigest = d
		}
	}
	if present(raw.Mode) {
		if str, sok := c.str(raw.Mode.Expr, &raw.Mode.Range, "encryption_mode"); !sok {
			ok = false
		} else if m, err := fwknop.ParseMode(str); err != nil {
			c.errorf(raw.Mode.Expr.Range().Ptr(), &raw.Mode.Range,
				fmt.Sprintf("As the fwknop client's --encryption-mode: %v.", err),
				"invalid encryption_mode %q in door %q", str, door)
			ok = false
		} else {
			s.Keys.Mode = m
		}
	}

	if !c.spaKeys(door, &raw, blockRange, &s.Keys) {
		ok = false
	}

	s.MaxAge = c.duration(fmt.Sprintf("door %q", door), raw.MaxAge, DefaultSPAMaxAge, maxSPAAge)
	s.MaxOpenFor = c.duration(fmt.Sprintf("door %q", door), raw.MaxOpenFor, 0, maxOpenFor)
	if present(raw.AllowAnySource) {
		if v, bok := c.boolean(raw.AllowAnySource, fmt.Sprintf(" of door %q", door)); !bok {
			ok = false
		} else {
			s.AnySource = v
		}
	}
	if !ok {
		return nil, nil
	}
	return s, portRange
}

// spaKeys reads the keys inline or from keys_file, exactly one way.
func (c *compiler) spaKeys(door string, raw *rawSPA, block hcl.Range, keys *fwknop.Keys) bool {
	inline := present(raw.KeyBase64) || present(raw.HMACKeyBase64)
	if inline && present(raw.KeysFile) {
		c.errorf(raw.KeysFile.Range.Ptr(), nil,
			"Give the keys either inline (key_base64 and hmac_key_base64) or in keys_file, not both.",
			"door %q has both inline SPA keys and a keys_file", door)
		return false
	}
	var enc, mac string
	var encRange, macRange *hcl.Range
	switch {
	case present(raw.KeysFile):
		path, ok := c.str(raw.KeysFile.Expr, &raw.KeysFile.Range, "keys_file")
		if !ok {
			return false
		}
		path = c.relative(path)
		c.nameFile(path, fmt.Sprintf("the keys_file of door %q", door))
		r := raw.KeysFile.Expr.Range().Ptr()
		b, err := os.ReadFile(path)
		if err != nil {
			c.errorf(r, &raw.KeysFile.Range, err.Error()+".", "failed to read keys_file of door %q", door)
			return false
		}
		enc, mac = parseKeysFile(b)
		if enc == "" || mac == "" {
			c.errorf(r, &raw.KeysFile.Range,
				"The file needs a KEY_BASE64 and an HMAC_KEY_BASE64 line, as `knockgate keygen` and `fwknop --key-gen` print them.",
				"keys_file %s of door %q lacks a key", path, door)
			return false
		}
		encRange, macRange = r, r
	default:
		for _, a := range []struct {
			attr *hcl.Attribute
			name string
			dst  *string
			rng  **hcl.Range
		}{{raw.KeyBase64, "key_base64", &enc, &encRange}, {raw.HMACKeyBase64, "hmac_key_base64", &mac, &macRange}} {
			if !present(a.attr) {
				c.errorf(block.Ptr(), nil,
					"An spa block needs key_base64 and hmac_key_base64 (HMAC is mandatory), or a keys_file; `knockgate keygen` makes them.",
					"door %q spa block has no %s", door, a.name)
				return false
			}
			s, ok := c.str(a.attr.Expr, &a.attr.Range, a.name)
			if !ok {
				return false
			}
			*a.dst, *a.rng = s, a.attr.Expr.Range().Ptr()
		}
	}
	var err error
	if keys.Enc, err = fwknop.DecodeKey(enc); err != nil {
		c.errorf(encRange, nil, err.Error()+".", "invalid encryption key of door %q", door)
		return false
	}
	if keys.HMAC, err = fwknop.DecodeKey(mac); err != nil {
		c.errorf(macRange, nil, err.Error()+".", "invalid HMAC key of door %q", door)
		return false
	}
	if err := keys.Validate(); err != nil {
		c.errorf(macRange, nil, err.Error()+".", "unusable SPA keys for door %q", door)
		return false
	}
	return true
}

// parseKeysFile reads KEY_BASE64 and HMAC_KEY_BASE64 from the output of
// `knockgate keygen` or `fwknop --key-gen` ("NAME: value"), or from an
// access.conf stanza ("NAME   value").
func parseKeysFile(b []byte) (enc, mac string) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue // keygen's comments carry a policy snippet with the keys
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			f := strings.Fields(line)
			if len(f) != 2 {
				continue
			}
			name, value = f[0], f[1]
		}
		switch strings.TrimSpace(name) {
		case "KEY_BASE64":
			enc = strings.TrimSpace(value)
		case "HMAC_KEY_BASE64":
			mac = strings.TrimSpace(value)
		}
	}
	return enc, mac
}
