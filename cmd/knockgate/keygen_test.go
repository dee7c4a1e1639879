package main

import (
	"os"
	"path/filepath"

	"github.com/knockgate/knockgate/rules"

	"strings"
	"testing"

	spa "github.com/knockgate/knockgate/verdict/fwknop"
)

// keygenKeys returns the two keys of keygen's output and checks that every
// other line is a comment or blank, so the whole output reads as a
// keys_file.
func keygenKeys(t *testing.T, out string) (enc, mac []byte, encB64, macB64 string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 2 {
		t.Fatalf("keygen printed %d lines:\n%s", len(lines), out)
	}
	var ok bool
	if encB64, ok = strings.CutPrefix(lines[0], "KEY_BASE64: "); !ok {
		t.Fatalf("first line %q is not KEY_BASE64: …", lines[0])
	}
	if macB64, ok = strings.CutPrefix(lines[1], "HMAC_KEY_BASE64: "); !ok {
		t.Fatalf("second line %q is not HMAC_KEY_BASE64: …", lines[1])
	}
	for _, l := range lines[2:] {
		if l != "" && !strings.HasPrefix(l, "#") {
			t.Fatalf("line %q is neither a comment nor blank", l)
		}
		if strings.HasSuffix(l, " ") {
			t.Errorf("line %q has trailing space", l)
		}
	}
	var err error
	if enc, err = spa.DecodeKey(encB64); err != nil {
		t.Fatal(err)
	}
	if mac, err = spa.DecodeKey(macB64); err != nil {
		t.Fatal(err)
	}
	// fwknop prints padded base64 (spec §2); so must we, for access.conf.
	if len(encB64)%4 != 0 || len(macB64)%4 != 0 {
		t.Errorf("keys are not padded base64: %q %q", encB64, macB64)
	}
	return enc, mac, encB64, macB64
}

func TestKeygen(t *testing.T) {
	for _, tc := range []struct {
		digest  string
		hmacLen int // fwknop --key-gen's sizes (spec §6)
	}{
		{"", 64}, {"sha256", 64}, {"md5", 16}, {"sha1", 20}, {"sha384", 128}, {"sha512", 128}, {"SHA3_256", 64}, {"sha3-512", 64},
	} {
		t.Run("digest="+tc.digest, func(t *testing.T) {
			args := []string{"keygen"}
			if tc.digest != "" {
				args = append(args, "--hmac-digest", tc.digest)
			}
			code, out, errOut := runMain(t, args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			enc, mac, encB64, macB64 := keygenKeys(t, out)
			if len(enc) != 32 || len(mac) != tc.hmacLen {
				t.Fatalf("keys are %d and %d bytes, want 32 and %d", len(enc), len(mac), tc.hmacLen)
			}
			name := tc.digest
			if name == "" {
				name = "sha256"
			}
			d, err := spa.ParseDigest(name)
			if err != nil {
				t.Fatal(err)
			}
			k := spa.Keys{Enc: enc, HMAC: mac, HMACDigest: d}
			if err := k.Validate(); err != nil {
				t.Fatal(err)
			}
			// The snippets carry the same keys, under fwknop's option names.
			for _, want := range []string{
				`#     key_base64      = "` + encB64 + `"`,
				`#     hmac_key_base64 = "` + macB64 + `"`,
				`#     hmac_digest     = "` + d.String() + `"`,
				`#     port            = "udp/62201"`,
				"#   KEY_BASE64          " + encB64 + "\n",
				"#   HMAC_KEY_BASE64     " + macB64 + "\n",
				"#   USE_HMAC            Y\n",
				"#   HMAC_DIGEST_TYPE    " + d.String() + "\n",
				"#   SPA_SERVER_PORT     62201\n",
				"#   SPA_SERVER_PROTO    udp\n",
				"#   ACCESS              tcp/22\n",
				"#   ALLOW_IP            resolve\n",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

func TestKeygenQuietAndFresh(t *testing.T) {
	_, a, _ := runMain(t, "keygen", "--quiet")
	_, b, _ := runMain(t, "keygen", "--quiet")
	if n := strings.Count(a, "\n"); n != 2 {
		t.Fatalf("--quiet printed %d lines, want 2:\n%s", n, a)
	}
	ea, ma, _, _ := keygenKeys(t, a)
	eb, mb, _, _ := keygenKeys(t, b)
	if string(ea) == string(eb) || string(ma) == string(mb) || string(ea) == string(ma) {
		t.Fatal("two runs printed the same key")
	}
}

func TestKeygenSnippetFlags(t *testing.T) {
	code, out, errOut := runMain(t, "keygen", "--server", "2001:db8::1", "--port", "40000", "--access", "tcp/22,udp/53", "--access", "tcp/443")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		`#     port            = "udp/40000"`,
		"#   SPA_SERVER          2001:db8::1\n",
		"#   SPA_SERVER_PORT     40000\n",
		"#   ACCESS              tcp/22,udp/53,tcp/443\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestKeygenErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"keygen", "--hmac-digest", "sha2"}, 1, `invalid --hmac-digest: digest "sha2" is not one of`},
		{[]string{"keygen", "--kind", "gpg"}, 1, `invalid --kind "gpg"`},
		{[]string{"keygen", "--port", "tcp/62201"}, 1, "invalid --port"},
		{[]string{"keygen", "--access", "tcp/0"}, 2, `invalid value "tcp/0" for flag -access`},
		{[]string{"keygen", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"keygen", "--nope"}, 2, "flag provided but not defined"},
		{[]string{"keygen", "--help"}, 0, "Usage: knockgate keygen"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := runMain(t, tc.args...)
			if code != tc.code || !strings.Contains(out+errOut, tc.want) {
				t.Fatalf("exit %d, output:\n%s%s\nwant exit %d and %q", code, out, errOut, tc.code, tc.want)
			}
		})
	}
}

// keygen --kind totp prints a secret that a policy reads as a secret_file
// and a totp block that uses it inline.
func TestTOTPKeygen(t *testing.T) {
	code, out, errOut := runMain(t, "keygen", "--kind", "totp")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "otp.secret"), []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	policy := "door \"otp\" {\n  totp {\n    secret_file = \"otp.secret\"\n    ports = \"udp/40000-40999\"\n  }\n  open = [\"tcp/22\"]\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "p.hcl"), []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := rules.Load(filepath.Join(dir, "p.hcl"))
	if err != nil {
		t.Fatalf("the policy refuses keygen's secret: %v", err)
	}
	if got := len(p.Doors[0].TOTP.Secret); got != 32 {
		t.Fatalf("secret of %d bytes", got)
	}
	code, out, _ = runMain(t, "sequence", "--door", "otp", "--config", filepath.Join(dir, "p.hcl"))
	if code != 0 || !strings.Contains(out, "udp/4") || !strings.Contains(out, "good until") {
		t.Fatalf("sequence: exit %d\n%s", code, out)
	}
}
