package daemon

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"github.com/knockgate/knockgate/cluster"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/knockgate/knockgate/gate"
	"github.com/knockgate/knockgate/rules"
	"github.com/knockgate/knockgate/verdict"
	"github.com/knockgate/knockgate/verdict/fwknop"
)

// savedDoc reads the lab's state file as it is on disk; none is empty.
func (l *lab) savedDoc() stateDoc {
	l.t.Helper()
	b, err := os.ReadFile(filepath.Join(l.dir, "state.json"))
	if os.IsNotExist(err) {
		return stateDoc{}
	}
	if err != nil {
		l.t.Fatal(err)
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		l.t.Fatal(err)
	}
	return doc
}

// accepted feeds n SYNs from src to port and counts those accepted.
func (l *lab) accepted(src string, port uint16, n int) int {
	l.t.Helper()
	got := 0
	for range n {
		if l.qs[0].feed(l.t, syn(src, port)).Verdict == verdict.Accept {
			got++
		}
	}
	return got
}

const limitedDoor = `
door "ssh" {
  sequence        = ["udp/7000", "udp/7001"]
  open            = ["tcp/22"]
  open_for        = "1h"
  max_connections = 2
}
`

// A max_connections grant keeps the connections it has left across a
// restart: each connection is saved as it is admitted (so a kill -9 loses
// nothing), and a clean stop saves it too. On a door of 2, one connection
// before the restart leaves one after it.
func TestRestoreKeepsConnectionsLeft(t *testing.T) {
	l := startLab(t, "", limitedDoor)
	l.open("198.51.100.7", 7000)
	eventually(t, "the grant saved", func() bool {
		doc := l.savedDoc()
		return len(doc.Grants) == 1 && doc.Grants[0].ConnsLeft == 2
	})
	if n := l.accepted("198.51.100.7", 22, 1); n != 1 {
		t.Fatalf("first connection: %d accepted", n)
	}
	// What a kill -9 would leave: the state writer's save after the
	// connection, before any stop.
	eventually(t, "the connection saved", func() bool {
		doc := l.savedDoc()
		return len(doc.Grants) == 1 && doc.Grants[0].ConnsLeft == 1
	})
	l.stop()
	l.start()
	if st := l.d.Status(); len(st.Doors) != 1 || len(st.Doors[0].Grants) != 1 || st.Doors[0].Grants[0].ConnsLeft != 1 {
		t.Fatalf("status after restart: %+v", st.Doors)
	}
	if n := l.accepted("198.51.100.7", 22, 3); n != 1 {
		t.Fatalf("after the restart %d of 3 connections got in, want 1 (2 in all)", n)
	}
}

// A version 1 state file (no conns_left) gives a grant on a
// max_connections door the door's max, never unlimited.
func TestRestoreVersion1StateFile(t *testing.T) {
	l := newLab(t)
	l.writePolicy("", limitedDoor)
	until := time.Now().Add(30 * time.Minute).UTC().Format(time.RFC3339)
	v1 := `{"version":1,"saved":"2026-01-01T00:00:00Z","grants":[{"door":"ssh","source":"198.51.100.7","opened":"2026-01-01T00:00:00Z","until":"` + until + `"}]}`
	if err := os.WriteFile(filepath.Join(l.dir, "state.json"), []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	l.start()
	if n := l.accepted("198.51.100.7", 22, 4); n != 2 {
		t.Fatalf("%d of 4 connections got in on a restored version 1 grant, want max_connections = 2", n)
	}
}

// An SPA grant whose client asked for 120 s comes back after a restart
// with what it had left, not with the door's open_for.
func TestRestoreKeepsSPAExpiry(t *testing.T) {
	key, hmacKey := freshSPAKeys()
	l := startLab(t, "", fmt.Sprintf(`
door "nas" {
  open     = ["tcp/22"]
  open_for = "30s"
  spa {
    port            = "udp/62201"
    max_open_for    = "5m"
    key_base64      = %q
    hmac_key_base64 = %q
  }
}
`, key, hmacKey))
	door, _ := doorNamed(l.d.eng.Policy(), "nas")
	src := netip.MustParseAddr("198.51.100.7")
	payload, err := fwknop.EncodeRandom(&fwknop.Message{Username: "test", Timestamp: time.Now(), Version: "3.0.0",
		Type: fwknop.TypeTimeoutAccess, ClientTimeout: 120, AllowIP: src, Ports: []fwknop.Port{{Proto: uint8(verdict.TCP), Num: 22}}},
		door.SPA.Keys, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if dec := l.qs[0].feed(t, verdict.Packet{Src: src, Proto: verdict.UDP, SrcPort: 40000, DstPort: 62201, Payload: payload}); dec.Reason != verdict.ReasonOpened {
		t.Fatalf("SPA packet: %v", dec)
	}
	l.stop()
	l.start()
	st := l.d.Status()
	if len(st.Doors) != 1 || len(st.Doors[0].Grants) != 1 {
		t.Fatalf("status after restart: %+v", st.Doors)
	}
	if left := st.Doors[0].Grants[0].LeftSeconds; left < 110 || left > 120 {
		t.Fatalf("the 120 s SPA grant came back with %.1f s left, want about 119", left)
	}
}

// A state path that is no regular file is refused at start, at once and
// before any queue is bound; a FIFO is never opened for reading (which
// would hang until a writer came).
func TestStatePathNotARegularFile(t *testing.T) {
	for name, mk := range map[string]func(path string) error{
		"fifo":      func(path string) error { return mkfifo(path) },
		"directory": func(path string) error { return os.Mkdir(path, 0o700) },
		"socket":    mksocket,
		"symlink to a fifo": func(path string) error {
			if err := mkfifo(path + ".fifo"); err != nil {
				return err
			}
			return os.Symlink(filepath.Base(path)+".fifo", path)
		},
		"symlink to a directory": func(path string) error { return os.Symlink("/", path) },
	} {
		t.Run(name, func(t *testing.T) {
			l := newLab(t)
			l.writePolicy("", twoDoors)
			if err := mk(filepath.Join(l.dir, "state.json")); err != nil {
				t.Fatal(err)
			}
			err, opened := l.runFails()
			if err == nil || !strings.Contains(err.Error(), "not a regular file") || !strings.Contains(err.Error(), "state.json") {
				t.Fatalf("Run = %v, want a refusal of the state path", err)
			}
			if opened {
				t.Fatal("a queue was opened before the state path was refused")
			}
			// The refused daemon holds no lock on the state file.
			lock, err := lockState(filepath.Join(l.dir, "state.json"), nil)
			if err != nil {
				t.Fatalf("after the refusal: %v", err)
			}
			lock.release()
		})
	}
}

// runFails runs a daemon on the lab's policy that must stop by itself
// within 3 s; it returns Run's error and whether a queue was opened.
func (l *lab) runFails() (error, bool) {
	l.t.Helper()
	pol := l.load()
	opened := false
	d, err := New(Config{Policy: pol, Path: l.policy, OpenQueue: func(cfg gate.Config) (Queue, error) {
		opened = true
		return newFakeQueue(cfg), nil
	}})
	if err != nil {
		l.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	select {
	case err := <-done:
		return err, opened
	case <-time.After(3 * time.Second):
		// Run may be stuck in an open that ctx cannot end (a FIFO): it is
		// left behind.
		l.t.Fatal("Run did not refuse to start within 3 s")
		return nil, opened
	}
}

func (l *lab) load() *rules.Policy {
	l.t.Helper()
	pol, err := rules.Load(l.policy)
	if err != nil {
		l.t.Fatal(err)
	}
	return pol
}

func mkfifo(path string) error { return syscall.Mkfifo(path, 0o600) }

func mksocket(path string) error {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	// Closing a listener removes its socket file; the file must stay.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	return ln.Close()
}

// A symlink at the state path is read through, as it always was, and
// replaced by the first save, never written through: the file it pointed
// to keeps what it held.
func TestStatePathSymlink(t *testing.T) {
	l := newLab(t)
	l.writePolicy("", twoDoors)
	target := filepath.Join(l.dir, "elsewhere.json")
	now := time.Now()
	if err := saveState(target, state{grants: []verdict.Grant{{Door: "ssh", Source: netip.MustParseAddr("198.51.100.7"),
		Opened: now, Until: now.Add(time.Hour)}}}, now, nil); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(target)
	if err := os.Symlink("elsewhere.json", filepath.Join(l.dir, "state.json")); err != nil {
		t.Fatal(err)
	}
	l.start()
	if st := l.d.Status(); !same(grants(st), []string{"ssh 198.51.100.7"}) {
		t.Fatalf("grants read through the symlink: %v", grants(st))
	}
	l.open("198.51.100.8", 8000)
	eventually(t, "saved", func() bool { return len(l.savedGrants()) == 2 })
	if fi, err := os.Lstat(filepath.Join(l.dir, "state.json")); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("state path after a save: %v %v, want a regular file", fi.Mode(), err)
	}
	if after, _ := os.ReadFile(target); string(after) != string(before) {
		t.Fatal("the save wrote through the symlink")
	}
}

// The daemon never renames or overwrites a file the policy names, even
// where the policy's own check (a state_file equal to the policy, by path
// or as the same file) could not see it: here the state file is reached
// through a directory symlink made after the policy was loaded. At start
// the "corrupt" state file is not set aside; later, a save does not
// replace it.
func TestStateNeverTouchesPolicyFiles(t *testing.T) {
	t.Run("set aside at start", func(t *testing.T) {
		l := newLab(t)
		l.writePolicyAt(filepath.Join(l.dir, "link", "policy.hcl"), twoDoors)
		pol := l.load()
		before, _ := os.ReadFile(l.policy)
		if err := os.Symlink(".", filepath.Join(l.dir, "link")); err != nil {
			t.Fatal(err)
		}
		d, err := New(Config{Policy: pol, Path: l.policy, OpenQueue: func(cfg gate.Config) (Queue, error) { return newFakeQueue(cfg), nil }})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := d.Run(ctx); err == nil || !strings.Contains(err.Error(), "never renames or overwrites") {
			t.Fatalf("Run = %v, want a refusal", err)
		}
		if after, err := os.ReadFile(l.policy); err != nil || string(after) != string(before) {
			t.Fatalf("the policy was moved or changed: %v", err)
		}
	})
	t.Run("save", func(t *testing.T) {
		l := newLab(t)
		if err := os.Mkdir(filepath.Join(l.dir, "other"), 0o700); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(l.dir, "link")
		if err := os.Symlink("other", link); err != nil {
			t.Fatal(err)
		}
		l.writePolicyAt(filepath.Join(link, "policy.hcl"), twoDoors)
		before, _ := os.ReadFile(l.policy)
		l.start()
		if err := os.Remove(link); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(".", link); err != nil {
			t.Fatal(err)
		}
		l.open("198.51.100.7", 7000)
		eventually(t, "the save refused", func() bool { return l.d.Status().StateFile.SaveFailures > 0 })
		if after, err := os.ReadFile(l.policy); err != nil || string(after) != string(before) {
			t.Fatalf("the policy was overwritten (%v):\n%s", err, after)
		}
		st := l.d.Status()
		if st.Health != "degraded" || !strings.Contains(st.Degraded, "never renames or overwrites") {
			t.Fatalf("status: %q %q", st.Health, st.Degraded)
		}
		l.stop()
		if after, err := os.ReadFile(l.policy); err != nil || string(after) != string(before) {
			t.Fatalf("the policy was overwritten at stop (%v):\n%s", err, after)
		}
	})
}

// A change that only adds access waits for the save gap, so a burst of
// grants costs one write; one that takes access away is saved at once,
// with every change before it. With an hour's gap: the first grant is
// saved, fifty more wait, and a revoke is on disk without waiting.
func TestSavesCoalesceButRevokesDoNot(t *testing.T) {
	l := newLab(t)
	l.saveGap = time.Hour
	l.writePolicy("", sshDoor)
	l.start()
	l.open("198.51.100.1", 7000)
	eventually(t, "the first grant saved", func() bool { return same(l.savedGrants(), []string{"ssh 198.51.100.1"}) })
	for i := 2; i <= 51; i++ {
		l.open(fmt.Sprintf("198.51.100.%d", i), 7000)
	}
	time.Sleep(300 * time.Millisecond)
	if got := l.savedGrants(); len(got) != 1 {
		t.Fatalf("grants saved within the gap: %d, want the first one only", len(got))
	}
	if live, err := l.d.Revoke("ssh", netip.MustParseAddr("198.51.100.1")); err != nil || !live {
		t.Fatalf("revoke: %v %v", live, err)
	}
	eventually(t, "the revoke saved at once, with the grants before it", func() bool {
		got := l.savedGrants()
		return len(got) == 50 && !slices.Contains(got, "ssh 198.51.100.1")
	})
}

// A used SPA packet a peer reports is on disk at once, past the save gap:
// a crash must not let the packet open again here.
func TestPeerReplaySavedAtOnce(t *testing.T) {
	key, hmacKey := freshSPAKeys()
	l := newLab(t)
	l.saveGap = time.Hour
	l.writePolicy("", sshDoor+fmt.Sprintf(`
door "nas" {
  open = ["tcp/445"]
  spa {
    port            = "udp/62201"
    key_base64      = %q
    hmac_key_base64 = %q
  }
}
`, key, hmacKey))
	l.start()
	l.open("198.51.100.1", 7000)
	eventually(t, "the first grant saved", func() bool { return len(l.savedGrants()) == 1 })
	l.open("198.51.100.2", 7000) // waits for the gap
	digest := [20]byte{1, 2, 3}
	l.d.applyRemote(cluster.Changes{Replays: []cluster.Replay{{Digest: digest, Until: time.Now().Add(time.Minute)}}})
	eventually(t, "the peer's replay entry saved at once", func() bool {
		st, err := loadState(filepath.Join(l.dir, "state.json"))
		return err == nil && slices.ContainsFunc(st.replay, func(r verdict.ReplayEntry) bool { return r.Key == digest })
	})
}
