package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// state_file = "" keeps grants in memory only: no state file is read or
// written, and the daemon logs no error for it at start or stop.
func TestStateFileEmptyKeepsMemoryOnly(t *testing.T) {
	l := newLab(t)
	policy := fmt.Sprintf("gate {\n  state_file = \"\"\n  control_socket = %q\n  max_sources = 1000\n  max_grants = 1000\n}\n%s",
		filepath.Join(l.dir, "kg.sock"), sshDoor)
	if err := os.WriteFile(l.policy, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	l.start()
	if f := l.d.gen.Load().pol.StateFile; f != "" {
		t.Fatalf("state_file = \"\" loads as %q, want empty", f)
	}
	l.open("198.51.100.7", 7000)
	l.stop()
	if n := len(l.logLines("grant opened")); n != 1 {
		t.Fatalf("%d grant opened lines, want 1", n)
	}
	for _, line := range strings.Split(strings.TrimSpace(l.logs.String()), "\n") {
		if strings.Contains(line, `"level":"ERROR"`) || strings.Contains(line, `"level":"WARN"`) {
			t.Errorf("memory-only daemon logged: %s", line)
		}
	}
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "policy.hcl" {
			t.Errorf("memory-only daemon left %s in its directory", e.Name())
		}
	}
}
