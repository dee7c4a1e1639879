package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/knockgate/knockgate/verdict"
)

// writePolicyAt writes the lab's policy with its own gate block: the
// state file at statePath, the control socket in the lab's directory.
func (l *lab) writePolicyAt(statePath, doors string) {
	l.t.Helper()
	gate := fmt.Sprintf("gate {\n  state_file = %q\n  control_socket = %q\n  max_sources = 1000\n  max_grants = 1000\n  max_replay = 1000\n}\n%s",
		statePath, filepath.Join(l.dir, "kg.sock"), noMetrics)
	if err := os.WriteFile(l.policy, []byte(gate+doors), 0o600); err != nil {
		l.t.Fatal(err)
	}
}

// A second daemon on the state file of a live one (with another policy,
// which lacks the live grant's door) refuses to start, naming the holder's
// pid; the live daemon's state file is untouched and its grant still
// works. Once the first stops, the lock is free.
func TestSecondDaemonOnStateFileRefused(t *testing.T) {
	l := startLab(t, "", twoDoors)
	l.open("198.51.100.7", 7000)
	statePath := filepath.Join(l.dir, "state.json")
	eventually(t, "grant saved", func() bool { return same(l.savedGrants(), []string{"ssh 198.51.100.7"}) })
	before, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatal(err)
	}

	l2 := newLab(t)
	l2.writePolicyAt(statePath, webDoor)
	err, opened := l2.runFails()
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("in use by another knockgate (pid %d", os.Getpid())) {
		t.Fatalf("second daemon: %v, want a refusal naming pid %d", err, os.Getpid())
	}
	if opened {
		t.Fatal("the second daemon opened a queue")
	}
	if after, err := os.ReadFile(statePath); err != nil || string(after) != string(before) {
		t.Fatalf("the second daemon changed the state file (%v):\n%s", err, after)
	}
	if dec := l.qs[0].feed(t, syn("198.51.100.7", 22)); dec.Verdict != verdict.Accept {
		t.Fatalf("the live grant after the second daemon: %v", dec)
	}

	l.stop()
	l2.start()
	if lines := l2.logLines("grants restored"); len(lines) != 1 {
		t.Fatalf("second daemon after the first stopped: %s", l2.logs)
	}
}

// A reload that names another state file takes its lock first: one that
// another daemon holds refuses the reload, and the running policy (and
// its state file) stays; a free one is taken, and the old one let go.
func TestReloadLocksNewStateFile(t *testing.T) {
	l1 := startLab(t, "", twoDoors)
	doors := twoDoors
	l2 := startLab(t, "", doors)
	l2.open("198.51.100.7", 7000)
	l2.writePolicyAt(filepath.Join(l1.dir, "state.json"), doors)
	if _, err := l2.d.Reload("test"); err == nil || !strings.Contains(err.Error(), "in use by another knockgate") {
		t.Fatalf("reload onto a held state file: %v", err)
	}
	if st := l2.d.Status(); st.StateFile.Path != filepath.Join(l2.dir, "state.json") || !same(grants(st), []string{"ssh 198.51.100.7"}) {
		t.Fatalf("status after the refused reload: %+v", st)
	}

	free := filepath.Join(l2.dir, "moved", "state.json")
	l2.writePolicyAt(free, doors)
	if _, err := l2.d.Reload("test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "saved to the new state file", func() bool { return len(l2.savedDocAt(free).Grants) == 1 })
	old, err := lockState(filepath.Join(l2.dir, "state.json"), nil)
	if err != nil {
		t.Fatalf("the old state file is still locked: %v", err)
	}
	old.release()
	if _, err := lockState(free, nil); err == nil {
		t.Fatal("the new state file is not locked")
	}
}
