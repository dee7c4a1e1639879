package rules

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every key and secret printed in the examples, README and man page
// sources is in publishedKeys: a key added to a document without being
// added there would be accepted silently.
func TestPublishedKeysCoverDocs(t *testing.T) {
	var files []string
	for _, g := range []string{"../contrib/examples/*.hcl", "../README.md", "../docs/*.md", "../contrib/demo/*"} {
		m, err := filepath.Glob(g)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 4 {
		t.Fatalf("found only %v", files)
	}
	// An attribute or a keygen/access.conf line, with a value that is
	// base64 (placeholders such as "..." or <KEY_BASE64> are not).
	value := regexp.MustCompile(`(?i)(?:key_base64|hmac_key_base64|secret_base64)\s*[=:]?\s*"?([A-Za-z0-9+/_-]{16,}={0,2})"?`)
	found := 0
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(src), "\n") {
			for _, m := range value.FindAllStringSubmatch(line, -1) {
				key, err := base64.StdEncoding.DecodeString(m[1])
				if err != nil {
					key, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(m[1], "="))
				}
				if err != nil {
					continue
				}
				found++
				if !isPublished(key) {
					t.Errorf("%s:%d: key %s is not in publishedKeys", f, i+1, m[1])
				}
			}
		}
	}
	if found == 0 {
		t.Fatal("no key found in the examples: the pattern is broken")
	}
	for _, k := range publishedKeys {
		if _, err := base64.StdEncoding.DecodeString(k); err != nil {
			t.Errorf("publishedKeys entry %q: %v", k, err)
		}
	}
}

func spaDoorWith(enc, mac, extra string) string {
	return fmt.Sprintf("door \"nas\" {\n  open = [\"tcp/22\"]\n  spa {\n    key_base64      = %q\n    hmac_key_base64 = %q\n%s  }\n}\n", enc, mac, extra)
}

func TestPublishedKeysRefused(t *testing.T) {
	own := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	ownMAC := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"))
	pubEnc, pubMAC := publishedKeys[0], publishedKeys[1]

	_, err := Parse([]byte(spaDoorWith(pubEnc, ownMAC, "")), "p.hcl")
	if err == nil || !strings.Contains(err.Error(), `p.hcl:4:23: door "nas" uses a published SPA encryption key`) {
		t.Fatalf("published encryption key: %v", err)
	}
	_, err = Parse([]byte(spaDoorWith(own, pubMAC, "")), "p.hcl")
	if err == nil || !strings.Contains(err.Error(), `p.hcl:5:23: door "nas" uses a published SPA HMAC key`) {
		t.Fatalf("published HMAC key: %v", err)
	}
	// URL-safe and unpadded, the same key.
	url := strings.TrimRight(strings.NewReplacer("+", "-", "/", "_").Replace(pubEnc), "=")
	if _, err := Parse([]byte(spaDoorWith(url, ownMAC, "")), "p.hcl"); err == nil {
		t.Fatal("a published key re-encoded passed")
	}

	p, err := Parse([]byte(spaDoorWith(pubEnc, pubMAC, "    allow_published_keys = true\n")), "p.hcl")
	if err != nil {
		t.Fatalf("allowed published keys: %v", err)
	}
	if ws := p.Warnings(); len(ws) != 2 || !strings.Contains(ws[0].Error(), "p.hcl:4:23: door \"nas\" uses a published SPA encryption key (allow_published_keys = true)") {
		t.Fatalf("warnings %v, want one per published key", ws)
	}
	if p, err := Parse([]byte(spaDoorWith(own, ownMAC, "")), "p.hcl"); err != nil || len(p.Warnings()) != 0 {
		t.Fatalf("own keys: %v, warnings %v", err, p.Warnings())
	}

	// A TOTP secret, likewise.
	secret := base64.StdEncoding.EncodeToString([]byte("published-totp-secret-for-test"))
	publishedKeys = append(publishedKeys, secret)
	t.Cleanup(func() { publishedKeys = publishedKeys[:len(publishedKeys)-1] })
	totp := func(extra string) string {
		return fmt.Sprintf("door \"otp\" {\n  open = [\"tcp/22\"]\n  totp {\n    secret_base64 = %q\n    ports = \"udp/40000-40999\"\n%s  }\n}\n", secret, extra)
	}
	if _, err := Parse([]byte(totp("")), "p.hcl"); err == nil || !strings.Contains(err.Error(), `p.hcl:4:21: door "otp" uses a published TOTP secret`) {
		t.Fatalf("published TOTP secret: %v", err)
	}
	if p, err := Parse([]byte(totp("    allow_published_keys = true\n")), "p.hcl"); err != nil || len(p.Warnings()) != 1 {
		t.Fatalf("allowed published TOTP secret: %v", err)
	}
}

// A policy holding keys inline, a keys_file or a secret_file that group
// or others may read is warned about; mode 0600 is not.
func TestKeyFilesPrivate(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "nas.keys")
	enc := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	mac := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"))
	if err := os.WriteFile(keys, []byte("KEY_BASE64: "+enc+"\nHMAC_KEY_BASE64: "+mac+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	viaFile := filepath.Join(dir, "file.hcl")
	inline := filepath.Join(dir, "inline.hcl")
	os.WriteFile(viaFile, []byte("door \"nas\" {\n  open = [\"tcp/22\"]\n  spa {\n    keys_file = \"nas.keys\"\n  }\n}\n"), 0o644)
	os.WriteFile(inline, []byte(spaDoorWith(enc, mac, "")), 0o640)
	for _, tt := range []struct {
		policy, file string
	}{{viaFile, keys}, {inline, inline}} {
		p, err := Load(tt.policy)
		if err != nil {
			t.Fatal(err)
		}
		ws := p.Warnings()
		if len(ws) != 1 || !strings.Contains(ws[0].Error(), tt.file+", ") || !strings.Contains(ws[0].Error(), "readable by group or others") {
			t.Fatalf("%s: warnings %v", tt.policy, ws)
		}
		os.Chmod(tt.file, 0o600)
		if p, err = Load(tt.policy); err != nil || len(p.Warnings()) != 0 {
			t.Fatalf("%s at 0600: %v, warnings %v", tt.policy, err, p.Warnings())
		}
	}
	// A policy without keys may be world-readable.
	plain := filepath.Join(dir, "plain.hcl")
	os.WriteFile(plain, []byte("door \"ssh\" {\n  sequence = [\"udp/7000\"]\n  open = [\"tcp/22\"]\n}\n"), 0o644)
	if p, err := Load(plain); err != nil || len(p.Warnings()) != 0 {
		t.Fatalf("plain policy: %v, %v", err, p.Warnings())
	}
}
