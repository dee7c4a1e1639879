package rules

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"

	"github.com/knockgate/knockgate/verdict"
	"github.com/knockgate/knockgate/verdict/fwknop"
)

// Defaults of a totp block.
const (
	DefaultTOTPStep   = 30 * time.Second
	DefaultTOTPLength = 4
)

// totpBlock reads a door's totp block; nil when it has errors.
func (c *compiler) totpBlock(door string, b *hcl.Block, body hcl.Body) (*verdict.TOTP, *hcl.Range) {
	var raw rawTOTP
	diags := gohcl.DecodeBody(body, nil, &raw)
	c.diags = append(c.diags, diags...)
	if diags.HasErrors() {
		return nil, nil
	}
	blockRange := nestedRange(b, "totp")
	ok := true
	t := &verdict.TOTP{Step: DefaultTOTPStep, Length: DefaultTOTPLength}

	var secret string
	var secretRange *hcl.Range
	switch {
	case present(raw.SecretBase64) && present(raw.SecretFile):
		c.errorf(raw.SecretFile.Range.Ptr(), nil, "Give the secret inline or in a file, not both.",
			"door %q has both secret_base64 and secret_file", door)
		return nil, nil
	case present(raw.SecretBase64):
		s, sok := c.str(raw.SecretBase64.Expr, &raw.SecretBase64.Range, "secret_base64")
		if !sok {
			return nil, nil
		}
		secret, secretRange = s, raw.SecretBase64.Expr.Range().Ptr()
	case present(raw.SecretFile):
		path, sok := c.str(raw.SecretFile.Expr, &raw.SecretFile.Range, "secret_file")
		if !sok {
			return nil, nil
		}
		secretRange = raw.SecretFile.Expr.Range().Ptr()
		path = c.relative(path)
		c.nameFile(path, fmt.Sprintf("the secret_file of door %q", door))
		text, err := os.ReadFile(path)
		if err != nil {
			c.errorf(secretRange, nil, err.Error()+".", "failed to read secret_file of door %q", door)
			return nil, nil
		}
		secret = parseSecretFile(text)
	default:
		c.errorf(blockRange.Ptr(), nil, "A totp block needs secret_base64 or secret_file; `knockgate keygen --kind totp` makes one.",
			"door %q totp block has no secret", door)
		return nil, nil
	}
	key, err := fwknop.DecodeKey(secret)
	if err != nil || len(key) < verdict.MinTOTPSecret {
		detail := fmt.Sprintf("The secret is base64 of at least %d random bytes, as `knockgate keygen --kind totp` prints it.", verdict.MinTOTPSecret)
		c.errorf(secretRange, nil, detail, "invalid TOTP secret of door %q", door)
		ok = false
	}
	t.Secret = key

	t.Step = c.duration(fmt.Sprintf("door %q", door), raw.Step, DefaultTOTPStep, maxTOTPStep)
	if t.Step < time.Second || t.Step%time.Second != 0 {
		if present(raw.Step) {
			c.errorf(raw.Step.Expr.Range().Ptr(), &raw.Step.Range,
				"The step is a whole number of seconds, such as \"30s\": clients on other machines must agree on it.",
				"invalid TOTP step of door %q", door)
		}
		ok = false
	}
	if present(raw.Length) {
		if n, lok := c.whole(raw.Length, 1, 64, "A TOTP sequence has from 1 to 64 knocks; 3 to 5 is usual."); lok {
			t.Length = int(n)
		} else {
			ok = false
		}
	}
	portsRange := blockRange.Ptr()
	if !present(raw.Ports) {
		c.errorf(blockRange.Ptr(), nil, `The derived knocks fall in a range reserved for them, such as ports = "udp/40000-40999".`,
			"door %q totp block has no ports", door)
		ok = false
	} else if s, sok := c.str(raw.Ports.Expr, &raw.Ports.Range, "ports"); sok {
		portsRange = raw.Ports.Expr.Range().Ptr()
		proto, lo, hi, err := parseRange(s)
		if err != nil {
			c.errorf(portsRange, &raw.Ports.Range, err.Error()+".", "invalid TOTP ports %q of door %q", s, door)
			ok = false
		} else if int(hi)-int(lo)+1 < 16 {
			c.errorf(portsRange, &raw.Ports.Range,
				"With fewer than 16 ports a guess is too easy; a range of a thousand is usual.",
				"TOTP range %q of door %q is too small", s, door)
			ok = false
		} else {
			t.Proto, t.Lo, t.Hi = proto, lo, hi
		}
	} else {
		ok = false
	}
	if !ok {
		return nil, nil
	}
	return t, portsRange
}

// parseRange parses "udp/40000-40999".
func parseRange(s string) (verdict.Proto, uint16, uint16, error) {
	loS, hiS, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, 0, fmt.Errorf("%q is not of the form proto/first-last, such as udp/40000-40999", s)
	}
	lo, err := verdict.ParsePort(loS)
	if err != nil {
		return 0, 0, 0, err
	}
	hi, err := strconv.ParseUint(hiS, 10, 16)
	if err != nil || hi == 0 || uint16(hi) < lo.Num {
		return 0, 0, 0, fmt.Errorf("%q: the last port %q is not a port at or above the first", s, hiS)
	}
	return lo.Proto, lo.Num, uint16(hi), nil
}

// parseSecretFile reads a TOTP secret file: the output of `knockgate keygen
// --kind totp` (a TOTP_SECRET_BASE64: line, then comments), or a bare
// base64 line.
func parseSecretFile(b []byte) string {
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		return strings.TrimSpace(strings.TrimPrefix(line, "TOTP_SECRET_BASE64:"))
	}
	return ""
}
