package rules

import (
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"os"

	"github.com/hashicorp/hcl/v2"
)

// Keys printed in knockgate's own examples and documentation are public:
// a door that uses one opens for anyone who read them. The policy refuses
// them (an error at the key) unless its spa or totp block says
// allow_published_keys = true, which turns the refusal into a warning
// that the daemon logs at every start and validate prints, for a lab.
// TestPublishedKeysCoverDocs fails when an example or a document holds a
// key this list lacks.

// publishedKeys are the SPA keys, HMAC keys and TOTP secrets of
// contrib/examples, README.md and docs/, base64 as printed.
var publishedKeys = []string{
	// contrib/examples/spa.hcl, door "nas"
	"RVhBTVBMRS1LRVktdXNlLWtub2NrZ2F0ZS1rZXlnZW4=",
	"RVhBTVBMRS1ITUFDLUtFWS1wdWJsaXNoZWQtaW4tZG9jcy1yZXBsYWNlLXdpdGgta25vY2tnYXRlLWtleWdlbg==",
	// contrib/examples/spa.hcl, door "office-web"
	"RVhBTVBMRS1LRVktMi11c2Uta25vY2tnYXRlLWtleWc=",
	"RVhBTVBMRS1ITUFDLUtFWS0yLXB1Ymxpc2hlZC1pbi1kb2NzLXJlcGxhY2Utd2l0aC1rbm9ja2dhdGUta2V5Zw==",
}

// isPublished reports whether key (decoded) is one of publishedKeys.
// Comparing the bytes, not the text, catches a key re-encoded (URL-safe
// base64, padding dropped) as well.
func isPublished(key []byte) bool {
	for _, s := range publishedKeys {
		b, err := base64.StdEncoding.DecodeString(s)
		if err == nil && subtle.ConstantTimeCompare(b, key) == 1 {
			return true
		}
	}
	return false
}

// published refuses a published key of door at r, or, when the block
// allows it, warns of it. what names the key ("SPA key", "TOTP secret").
func (c *compiler) published(door, what string, key []byte, r *hcl.Range, allow *hcl.Attribute) bool {
	if !isPublished(key) {
		return true
	}
	allowed := false
	if present(allow) {
		v, ok := c.boolean(allow, fmt.Sprintf(" of door %q", door))
		if !ok {
			return false
		}
		allowed = v
	}
	if allowed {
		c.warnings = append(c.warnings, fmt.Errorf("%s: door %q uses a published %s (allow_published_keys = true): anyone who has read knockgate's examples can open it; make your own with knockgate keygen",
			pos(*r), door, what))
		return true
	}
	c.errorf(r, nil,
		"This key is printed in knockgate's own examples: anyone who has read them can open the door. Make your own with `knockgate keygen` (--kind totp for a TOTP secret). For a test lab only, allow_published_keys = true in the block turns this refusal into a warning.",
		"door %q uses a published %s", door, what)
	return false
}

// private warns when path, which holds keys, can be read by group or
// others, as sshd and fwknopd do.
func (c *compiler) private(path, what string) {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return
	}
	c.warnings = append(c.warnings, fmt.Errorf("%s, %s, is readable by group or others (mode %04o): anyone on the machine may read its keys; chmod 600 %s",
		path, what, fi.Mode().Perm(), path))
}
