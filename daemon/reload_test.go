package daemon

import (
	"strings"
	"sync"
	"testing"

	"github.com/knockgate/knockgate/verdict"
)

// A reload keeps the grants of doors that remain, ends those of removed
// doors, and the state file follows.
func TestReload(t *testing.T) {
	l := startLab(t, "", twoDoors)
	l.open("198.51.100.7", 7000)
	l.open("198.51.100.8", 8000)

	// web goes, ftp comes, ssh stays: ssh moves from index 0 to 1.
	l.writePolicy("", `
door "ftp" {
  sequence = ["udp/9000", "udp/9001"]
  open     = ["tcp/21"]
}
`+sshDoor)
	out, err := l.d.Reload("test")
	if err != nil {
		t.Fatal(err)
	}
	if out.Doors != 2 || !same(out.Ended, []string{"web 198.51.100.8"}) {
		t.Fatalf("reload outcome %+v", out)
	}
	st := l.d.Status()
	if !same(grants(st), []string{"ssh 198.51.100.7"}) || st.Doors[0].Name != "ftp" {
		t.Fatalf("status after reload: %+v", st)
	}
	if dec := l.qs[0].feed(t, syn("198.51.100.7", 22)); dec.Verdict != verdict.Accept {
		t.Fatalf("kept grant: %v", dec)
	}
	if dec := l.qs[0].feed(t, syn("198.51.100.8", 443)); dec.Verdict != verdict.Drop || dec.Reason != verdict.ReasonClosedUntilRestart {
		// tcp/443 is no longer any door's, but a reload never opens
		// what the running policy protected: closed until restart.
		t.Fatalf("port of the removed door: %v", dec)
	}
	eventually(t, "reload saved", func() bool { return same(l.savedGrants(), []string{"ssh 198.51.100.7"}) })
	if lines := l.logLines("grant ended"); len(lines) != 1 || lines[0]["door"] != "web" {
		t.Fatalf("grant ended lines %v", lines)
	}
}

// An invalid policy is refused with its diagnostics, and the running one
// stays.
func TestReloadRefusesInvalidPolicy(t *testing.T) {
	l := startLab(t, "", twoDoors)
	l.open("198.51.100.7", 7000)
	l.writePolicy("", `door "ssh" {
  sequence = ["udp/7000", "udp/70000"]
  open     = ["tcp/22"]
}
`)
	if _, err := l.d.Reload("test"); err == nil || !strings.Contains(err.Error(), "policy.hcl:") {
		t.Fatalf("reload of an invalid policy: %v", err)
	}
	if st := l.d.Status(); len(st.Doors) != 2 || !same(grants(st), []string{"ssh 198.51.100.7"}) {
		t.Fatalf("status after a refused reload: %+v", st)
	}
	if dec := l.qs[0].feed(t, syn("198.51.100.7", 22)); dec.Verdict != verdict.Accept {
		t.Fatalf("grant after a refused reload: %v", dec)
	}
	if n := len(l.logLines("policy reload refused; the running policy stays")); n != 1 {
		t.Fatalf("%d refusal lines, want 1", n)
	}
}

// Settings bound at start (the queue, the sockets, fail-open) keep their
// running values until a restart, and the daemon says so; the state file
// follows at once.
func TestReloadRestartOnlySettings(t *testing.T) {
	l := startLab(t, "", twoDoors)
	l.open("198.51.100.7", 7000)
	l.writePolicy("  queue = 9\n  fail_open = true\n", twoDoors)
	if _, err := l.d.Reload("test"); err != nil {
		t.Fatal(err)
	}
	var settings []string
	for _, line := range l.logLines("a changed setting takes effect at the next restart") {
		settings = append(settings, line["setting"].(string))
	}
	if strings.Join(settings, ",") != "queue,fail_open" {
		t.Fatalf("restart warnings for %v, want queue and fail_open", settings)
	}
	if st := l.d.Status(); st.Queue.Queue != 0 {
		t.Fatalf("status names queue %d after the reload, want the bound 0", st.Queue.Queue)
	}
}

// Status and reload may run at once (the control socket serves each
// connection on its own goroutine, and SIGHUP reloads on another): with
// -race this fails if status reads the running policy unsynchronised.
func TestStatusDuringReload(t *testing.T) {
	l := startLab(t, "", twoDoors)
	l.open("198.51.100.7", 7000)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for range 5 {
			if _, err := l.d.Reload("test"); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 5 {
			if st := l.d.Status(); !same(grants(st), []string{"ssh 198.51.100.7"}) {
				t.Errorf("status during reloads: %v", grants(st))
				return
			}
		}
	}()
	wg.Wait()
}
