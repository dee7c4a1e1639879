package daemon

import (
	"errors"
	"io"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/knockgate/knockgate/verdict"
)

// inFullFS is set in the child process that TestFailedSaveNeverUndoesRevoke
// runs itself in.
const inFullFS = "KNOCKGATE_TEST_FULL_FS"

// A save that fails on a full disk after a revoke removes the state file
// that still holds the revoked grant, so a restart cannot bring it back;
// one that fails with nothing lost (a new grant) leaves the file. Failed
// saves are counted, and status and readiness say degraded.
//
// The disk is a real one: a 16 KiB tmpfs, mounted in a mount namespace of
// a child process (this test, run again), so nothing outside sees it. It
// needs root, or user namespaces; otherwise it is skipped.
func TestFailedSaveNeverUndoesRevoke(t *testing.T) {
	if os.Getenv(inFullFS) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFailedSaveNeverUndoesRevoke$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), inFullFS+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
		if os.Geteuid() != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
				UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}},
				GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}}
		}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Skipf("no mount namespace for the full disk: %v", err)
		}
		if err != nil || !strings.Contains(string(out), "--- PASS") {
			t.Fatalf("in the mount namespace: %v\n%s", err, out)
		}
		return
	}

	l := newLab(t)
	stateDir := filepath.Join(l.dir, "state")
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", stateDir, "tmpfs", 0, "size=16k"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(stateDir, syscall.MNT_DETACH) })
	statePath := filepath.Join(stateDir, "state.json")
	l.writePolicyAt(statePath, twoDoors)
	l.start()
	l.open("198.51.100.7", 7000)
	eventually(t, "grant saved", func() bool { return len(l.savedDocAt(statePath).Grants) == 1 })

	// Fill the disk to the last byte.
	filler, err := os.Create(filepath.Join(stateDir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	for _, err := filler.Write(make([]byte, 4096)); err == nil; _, err = filler.Write(make([]byte, 512)) {
	}
	filler.Close()

	// A new grant whose save fails loses nothing on disk: the file stays.
	l.open("198.51.100.8", 8000)
	eventually(t, "failed save counted", func() bool { return l.d.Status().StateFile.SaveFailures >= 1 })
	if doc := l.savedDocAt(statePath); len(doc.Grants) != 1 {
		t.Fatalf("the state file after a failed save that lost nothing: %+v", doc)
	}
	st := l.d.Status()
	if st.Health != "degraded" || !strings.Contains(st.Degraded, "no space left on device") {
		t.Fatalf("status after a failed save: %q %q", st.Health, st.Degraded)
	}
	if err := testutil.GatherAndCompare(l.d.m.Registry(), strings.NewReader(`
# HELP knockgate_state_save_failures_total Saves of the state file that failed: the grants they held will not survive a restart.
# TYPE knockgate_state_save_failures_total counter
knockgate_state_save_failures_total 1
`), "knockgate_state_save_failures_total"); err != nil {
		t.Error(err)
	}
	srv := httptest.NewServer(l.d.m.Handler(nil))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/-/ready")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), "degraded: the state file cannot be saved") {
		t.Fatalf("/-/ready: %d %q", resp.StatusCode, body)
	}

	// The revoke's save fails too: the file, which still grants
	// 198.51.100.7, goes.
	if live, err := l.d.Revoke("ssh", netip.MustParseAddr("198.51.100.7")); err != nil || !live {
		t.Fatalf("revoke: %v %v", live, err)
	}
	eventually(t, "stale state file removed", func() bool {
		_, err := os.Stat(statePath)
		return os.IsNotExist(err)
	})
	if n := len(l.logLines("failed to save grants; removed the state file, which would have brought back grants since ended: a restart now starts with no grants and no SPA replay cache")); n != 1 {
		t.Fatalf("%d removal lines, want 1:\n%s", n, l.logs)
	}
	l.stop()
	l.start()
	if dec := l.qs[0].feed(t, syn("198.51.100.7", 22)); dec.Verdict != verdict.Drop {
		t.Fatalf("the revoked grant after a restart: %v", dec)
	}
}

// savedDocAt reads a state file; none is empty.
func (l *lab) savedDocAt(path string) stateDoc {
	l.t.Helper()
	st, err := loadState(path)
	if err != nil {
		l.t.Fatal(err)
	}
	var doc stateDoc
	for _, g := range st.grants {
		doc.Grants = append(doc.Grants, stateGrant{Door: g.Door, Source: g.Source})
	}
	return doc
}
