//go:build integration

package integration

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A second daemon started on the live daemon's state file, with a policy
// that lacks the live grant's door, fails to start and names the live
// daemon's pid; the state file is unchanged, and the live grant still lets
// its source in. Before the state file's lock, the second daemon restored
// the grants its policy knew, failed to bind the queue, and saved its view
// over the live one's on the way out.
func TestSecondDaemonKeepsOffStateFile(t *testing.T) {
	l := newLab(t)
	l.start()
	l.knock("c1", v4, v4.gwForC1, "7000", "8000:udp", "9000")
	l.wantConnect("c1", v4.gwForC1, 22)
	var before []byte
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(string(before), v4.c1.String()); {
		if time.Now().After(deadline) {
			t.Fatalf("the grant was not saved: %s", before)
		}
		time.Sleep(50 * time.Millisecond)
		before, _ = os.ReadFile(l.stateFile())
	}

	second := filepath.Join(l.dir, "second.hcl")
	src := fmt.Sprintf("gate {\n  state_file     = %q\n  control_socket = %q\n}\n\nmetrics {\n  listen = \"127.0.0.1:8790\"\n}\n"+
		"door \"lan\" {\n  sequence = [\"udp/6100\", \"tcp/6200\"]\n  open     = [\"tcp/2222\"]\n}\n",
		l.stateFile(), filepath.Join(l.dir, "kg2.sock"))
	if err := os.WriteFile(second, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", l.ns("gw"), binPath, "run", "--config", second)
	done := make(chan struct{})
	var out []byte
	var err error
	start := time.Now()
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the second daemon still runs after 10 s:\n%s", out)
	}
	if after, err := os.ReadFile(l.stateFile()); err != nil || string(after) != string(before) {
		t.Fatalf("the state file changed (%v):\nbefore %s\nafter %s", err, before, after)
	}
	want := fmt.Sprintf("in use by another knockgate (pid %d", l.daemon.Process.Pid)
	if err == nil || !strings.Contains(string(out), want) {
		t.Fatalf("second daemon: %v, want a failure saying %q:\n%s", err, want, out)
	}
	t.Logf("second daemon refused in %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))
	l.wantConnect("c1", v4.gwForC1, 22)
	if !l.hasLog("grant opened") || l.hasLog("knockgate stopped") {
		t.Fatal("the live daemon stopped")
	}
}

// countConnects tries n connections from ns to port 22 and counts those
// that complete.
func (l *lab) countConnects(ns string, to netip.Addr, n int) int {
	got := 0
	for range n {
		if l.connects(ns, to, 22, 2*time.Second) {
			got++
		}
	}
	return got
}

// A max_connections grant keeps what it has left across a restart, a
// kill -9 included: on a door of 2, one connection before the kill leaves
// one after it; a grant of a door of 1 that a clean stop saved admits one.
// Before, the state file kept no count: the grant came back with its door's
// maximum (or, before the engine's rule, unlimited).
func TestRestartKeepsConnectionsLeft(t *testing.T) {
	l := newLab(t)
	l.doors = strings.Replace(policy, `open_for         = "4s"`, "open_for         = \"60s\"\n  max_connections  = 2", 1)
	l.start()
	l.knock("c1", v4, v4.gwForC1, "7000", "8000:udp", "9000")
	l.wantConnect("c1", v4.gwForC1, 22)
	// The state writer saves the connection a moment after the verdict
	// (which never waits for the disk); a crash within that moment would
	// lose it, so the kill comes after it.
	time.Sleep(300 * time.Millisecond)
	l.kill()
	l.start()
	l.waitLog("grants restored", time.Second, "restored=1")
	if n := l.countConnects("c1", v4.gwForC1, 4); n != 1 {
		t.Fatalf("after kill -9, %d of 4 connections got in, want 1 (2 in all)", n)
	}

	l.doors = strings.Replace(policy, `open_for         = "4s"`, "open_for         = \"60s\"\n  max_connections  = 1", 1)
	if err := l.daemon.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	l.daemon.Wait()
	l.start()
	l.knock("c1", v4, v4.gwForC1, "7000", "8000:udp", "9000")
	l.waitLog("grant opened", 2*time.Second, "source="+v4.c1.String())
	if err := l.daemon.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	l.daemon.Wait()
	l.start()
	l.waitLog("grants restored", time.Second, "restored=1")
	if n := l.countConnects("c1", v4.gwForC1, 4); n != 1 {
		t.Fatalf("after a clean restart, %d of 4 connections got in, want 1", n)
	}
}
