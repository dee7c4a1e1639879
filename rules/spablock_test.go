package rules

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict"
	"github.com/knockgate/knockgate/verdict/fwknop"
)

func newKeys(t *testing.T) (enc, mac string) {
	t.Helper()
	enc, mac, err := fwknop.GenerateKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return enc, mac
}

func TestSPAValid(t *testing.T) {
	enc, mac := newKeys(t)
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "cam.keys")
	if err := os.WriteFile(keysFile, []byte(fwknop.FormatKeys(enc, mac)), 0o600); err != nil {
		t.Fatal(err)
	}
	src := fmt.Sprintf(`
door "nas" {
  spa {
    key_base64      = %q
    hmac_key_base64 = %q
  }
  open = ["tcp/22", "tcp/443"]
}
door "cam" {
  sequence = ["tcp/7000"]
  spa {
    port             = "udp/62201"
    keys_file        = "cam.keys"
    hmac_digest      = "sha512"
    encryption_mode  = "ctr"
    max_age          = "30s"
    max_open_for     = "5m"
    allow_any_source = true
  }
  open     = ["tcp/554"]
  open_for = "1m"
}`, enc, mac)
	// hmac_digest sha512 with a 32-byte key is fine: keys are just bytes.
	p, err := Parse([]byte(src), filepath.Join(dir, "policy.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	nas, cam := p.Doors[0].SPA, p.Doors[1].SPA
	if nas == nil || cam == nil {
		t.Fatalf("spa blocks missing: %+v", p.Doors)
	}
	if nas.Port != (verdict.Port{Proto: verdict.UDP, Num: 62201}) || nas.MaxAge != DefaultSPAMaxAge ||
		nas.Keys.HMACDigest != fwknop.SHA256 || nas.Keys.Mode != fwknop.CBC || nas.AnySource || nas.MaxOpenFor != 0 {
		t.Errorf("nas defaults: %+v", nas)
	}
	if cam.Keys.HMACDigest != fwknop.SHA512 || cam.Keys.Mode != fwknop.CTR || cam.MaxAge != 30*time.Second ||
		cam.MaxOpenFor != 5*time.Minute || !cam.AnySource {
		t.Errorf("cam settings: %+v", cam)
	}
	wantEnc, _ := fwknop.DecodeKey(enc)
	if string(cam.Keys.Enc) != string(wantEnc) || string(nas.Keys.Enc) != string(wantEnc) {
		t.Error("keys not decoded")
	}
	if _, err := verdict.NewEngine(p.Policy, time.Unix(0, 0)); err != nil {
		t.Fatalf("the engine refuses the policy: %v", err)
	}
}

func TestSPAErrors(t *testing.T) {
	enc, mac := newKeys(t)
	tests := []struct {
		name, body string
		want       []string
	}{
		{"no keys", `spa {}`, []string{`t.hcl:3:3: door "d" spa block has no key_base64`}},
		{"no hmac key", fmt.Sprintf(`spa { key_base64 = %q }`, enc), []string{`t.hcl:3:3: door "d" spa block has no hmac_key_base64`}},
		{"both inline and file", fmt.Sprintf(`spa {
    key_base64      = %q
    hmac_key_base64 = %q
    keys_file       = "k"
  }`, enc, mac), []string{`t.hcl:6:5: door "d" has both inline SPA keys and a keys_file`}},
		{"missing keys file", `spa { keys_file = "/nonexistent/k" }`, []string{`t.hcl:3:21: failed to read keys_file of door "d"`}},
		{"bad base64", fmt.Sprintf(`spa {
    key_base64      = "not base64!"
    hmac_key_base64 = %q
  }`, mac), []string{`t.hcl:4:23: invalid encryption key of door "d"`}},
		{"same key twice", fmt.Sprintf(`spa {
    key_base64      = %q
    hmac_key_base64 = %q
  }`, enc, enc), []string{`t.hcl:5:23: unusable SPA keys for door "d"`}},
		{"tcp port", fmt.Sprintf(`spa {
    port            = "tcp/62201"
    key_base64      = %q
    hmac_key_base64 = %q
  }`, enc, mac), []string{`t.hcl:4:23: spa port "tcp/62201" of door "d" is not udp`}},
		{"digest and mode", fmt.Sprintf(`spa {
    key_base64      = %q
    hmac_key_base64 = %q
    hmac_digest     = "sha999"
    encryption_mode = "xts"
    max_age         = "0s"
    allow_any_source = "yes"
  }`, enc, mac), []string{
			`t.hcl:6:23: invalid hmac_digest "sha999"`,
			`t.hcl:7:23: invalid encryption_mode "xts"`,
			`t.hcl:8:23: door "d" max_age "0s" is not positive`,
			`t.hcl:9:24: allow_any_source of door "d" is not a bool`,
		}},
		{"port used by a knock", fmt.Sprintf(`sequence = ["udp/62201"]
  spa {
    key_base64      = %q
    hmac_key_base64 = %q
  }`, enc, mac), []string{`t.hcl:4:3: spa port udp/62201 of door "d" is used by another rule; Door "d" sequence uses it at t.hcl:3:15`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := fmt.Sprintf("\ndoor \"d\" {\n  %s\n  open = [\"tcp/22\"]\n}\n", tt.body)
			_, err := Parse([]byte(src), "t.hcl")
			wantDiags(t, err, tt.want)
		})
	}
}

func TestParseKeysFile(t *testing.T) {
	for name, src := range map[string]string{
		"keygen":      "KEY_BASE64: abc\nHMAC_KEY_BASE64: def\n",
		"access.conf": "SOURCE ANY\nKEY_BASE64     abc\nHMAC_KEY_BASE64   def\n",
		"commented":   "KEY_BASE64: abc\nHMAC_KEY_BASE64: def\n# KEY_BASE64: zzz\n#   hmac_key_base64 = \"yyy\"\n# HMAC_KEY_BASE64 yyy\n",
	} {
		if enc, mac := parseKeysFile([]byte(src)); enc != "abc" || mac != "def" {
			t.Errorf("%s: got %q, %q", name, enc, mac)
		}
	}
}

// Two doors on one SPA port with the same HMAC key: the engine gives a
// packet to the first that admits its source, so the second is refused
// unless their allow_from lists keep them apart.
func TestSPAShadowedDoor(t *testing.T) {
	enc, mac := newKeys(t)
	enc2, mac2 := newKeys(t)
	door := func(name, enc, mac, allow string) string {
		a := ""
		if allow != "" {
			a = "\n  allow_from = [" + allow + "]"
		}
		return fmt.Sprintf("door %q {\n  spa {\n    key_base64      = %q\n    hmac_key_base64 = %q\n  }\n  open = [\"tcp/22\"]%s\n}\n", name, enc, mac, a)
	}
	for _, tt := range []struct {
		name string
		src  string
		want []string // nil: valid
	}{
		{"same hmac key, anyone", door("a", enc, mac, "") + door("b", enc2, mac, ""),
			[]string{`t.hcl:9:3: spa of door "b" can never open it; Door "a" takes SPA packets on the same port with the same HMAC key and digest, and it comes first, so it takes every packet from any source.`}},
		{"same hmac key, overlapping allow_from", door("a", enc, mac, `"198.51.100.0/24"`) + door("b", enc2, mac, `"198.51.100.128/25", "203.0.113.0/24"`),
			[]string{`t.hcl:10:3: spa of door "b" can never open it; Door "a" takes SPA packets on the same port with the same HMAC key and digest, and it comes first, so it takes every packet from 198.51.100.128/25.`}},
		{"same hmac key, the first for everyone", door("a", enc, mac, "") + door("b", enc2, mac, `"203.0.113.0/24"`),
			[]string{`t.hcl:9:3: spa of door "b" can never open it; Door "a" takes SPA packets on the same port with the same HMAC key and digest, and it comes first, so it takes every packet from 203.0.113.0/24.`}},
		{"same hmac key, disjoint allow_from", door("a", enc, mac, `"198.51.100.0/24"`) + door("b", enc2, mac, `"203.0.113.0/24"`), nil},
		{"own hmac keys", door("a", enc, mac, "") + door("b", enc2, mac2, ""), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src), "t.hcl")
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			wantDiags(t, err, tt.want)
		})
	}
}
