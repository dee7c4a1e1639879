package rules

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/knockgate/knockgate/verdict/fwknop"
)

// The state file may not be a file the policy names: the daemon writes
// its state there, so it would overwrite the policy on a reload, or set a
// keys or secret file aside as "corrupt" at start and write JSON in its
// place. Paths are compared cleaned and absolute, and as files when both
// exist (a symlink, a hard link).
func TestStateFileIsNoFileThePolicyNames(t *testing.T) {
	dir := t.TempDir()
	enc, mac := newKeys(t)
	keys := filepath.Join(dir, "nas.keys")
	secretFile := filepath.Join(dir, "otp.secret")
	policy := filepath.Join(dir, "policy.hcl")
	for path, text := range map[string]string{
		keys:       fwknop.FormatKeys(enc, mac),
		secretFile: "TOTP_SECRET_BASE64: " + secret + "\n",
	} {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, "state-link.json")
	if err := os.Symlink(policy, link); err != nil {
		t.Fatal(err)
	}
	hard := filepath.Join(dir, "state-hard.json")
	src := func(state string) string {
		return fmt.Sprintf(`gate {
  state_file = %q
}
door "nas" {
  spa {
    keys_file = "nas.keys"
  }
  open = ["tcp/22"]
}
door "otp" {
  totp {
    secret_file = "otp.secret"
    ports       = "udp/40000-40999"
  }
  open = ["tcp/23"]
}
`, state)
	}
	for _, tt := range []struct {
		state, want string
	}{
		{policy, "is the policy file itself"},
		{filepath.Join(dir, "sub", "..", "policy.hcl"), "is the policy file itself"},
		{keys, `is the keys_file of door "nas"`},
		{secretFile, `is the secret_file of door "otp"`},
		{link, "is the policy file itself"},
		{hard, `is the keys_file of door "nas"`},
	} {
		if tt.state == hard {
			if err := os.Link(keys, hard); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(policy, []byte(src(tt.state)), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(policy)
		want := fmt.Sprintf("%s:2:16: state_file %q %s", policy, filepath.Clean(tt.state), tt.want)
		if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("state_file %s: got %v\nwant %s", tt.state, err, want)
		}
	}

	good := filepath.Join(dir, "state.json")
	if err := os.WriteFile(policy, []byte(src(good)), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Load(policy)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.ProtectedFiles(), []string{policy, keys, secretFile}; !slices.Equal(got, want) {
		t.Errorf("ProtectedFiles = %q, want %q", got, want)
	}
}

// A policy read through a relative path names its files absolute, so the
// daemon compares them with the state file whatever its working directory.
func TestProtectedFilesAreAbsolute(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile("p.hcl", []byte("gate {\n  state_file = \""+filepath.Join(dir, "p.hcl")+"\"\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load("p.hcl"); err == nil || !strings.HasPrefix(err.Error(), "p.hcl:2:16: ") {
		t.Errorf("a state_file naming a policy read by a relative path: %v", err)
	}
	p, err := Parse(nil, "p.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.ProtectedFiles(); !slices.Equal(got, []string{filepath.Join(dir, "p.hcl")}) {
		t.Errorf("ProtectedFiles = %q", got)
	}
}
