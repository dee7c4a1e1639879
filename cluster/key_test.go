package cluster

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyFile(t *testing.T) {
	k := NewKey()
	if len(k) != KeySize || bytes.Equal(k, NewKey()) {
		t.Fatalf("key %x", k)
	}
	f := FormatKey(k)
	if bytes.Count(f, []byte("\n")) != 1 {
		t.Fatalf("key file %q is not one line", f)
	}
	path := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(path, f, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadKeyFile(path)
	if err != nil || !bytes.Equal(got, k) {
		t.Fatalf("read %x, %v; want %x", got, err, k)
	}
	for _, c := range []struct{ in, want string }{
		{"", "empty"},
		{"  \n", "empty"},
		{"not base64!\n", "not base64"},
		{"MTIzNDU2Nzg=\n", "8 bytes"},
		{string(f) + string(f), "more than one line"},
	} {
		if _, err := ParseKey([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseKey(%q): %v, want an error saying %q", c.in, err, c.want)
		}
	}
	if _, err := ParseKey([]byte(" MDEyMzQ1Njc4OWFiY2RlZg== \r\n")); err != nil {
		t.Errorf("16-byte key with surrounding space: %v", err)
	}
	if _, err := ReadKeyFile(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "failed to read cluster key") {
		t.Errorf("missing file: %v", err)
	}
}
