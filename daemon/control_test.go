package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

type fakeControl struct {
	revoked []string
	fail    error
}

func (f *fakeControl) Status() *StatusReport {
	return &StatusReport{Version: "test", Policy: "/etc/p.hcl", TrackedSources: 3, MaxSources: 10,
		Doors: []DoorStatus{{Name: "ssh", Grants: []GrantStatus{{Source: netip.MustParseAddr("198.51.100.7"), LeftSeconds: 12,
			Until: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}}, {Name: "web"}}}
}

func (f *fakeControl) Revoke(door string, src netip.Addr) (bool, error) {
	if door != "ssh" {
		return false, errors.New(`no door "` + door + `" in the policy`)
	}
	f.revoked = append(f.revoked, door+" "+src.String())
	return true, nil
}

func (f *fakeControl) Reload(string) (*ReloadOutcome, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	return &ReloadOutcome{Doors: 2, Ended: []string{"old 192.0.2.9"}}, nil
}

func startControl(t *testing.T, h Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "kg.sock")
	ln, err := ListenControl(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go ServeControl(ctx, ln, h, slog.New(slog.DiscardHandler))
	return path
}

func TestControlSocket(t *testing.T) {
	f := &fakeControl{}
	sock := startControl(t, f)
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory mode %v, %v; want 0700", fi.Mode(), err)
	}

	c := Client{Socket: sock}
	st, err := c.Status()
	if err != nil || st.TrackedSources != 3 || len(st.Doors) != 2 || st.Doors[0].Grants[0].Source != netip.MustParseAddr("198.51.100.7") {
		t.Fatalf("status: %+v, %v", st, err)
	}
	if live, err := c.Revoke("ssh", "2001:db8::1"); err != nil || !live || len(f.revoked) != 1 || f.revoked[0] != "ssh 2001:db8::1" {
		t.Fatalf("revoke: %v, %v, revoked %v", live, err, f.revoked)
	}
	if _, err := c.Revoke("nope", "192.0.2.1"); err == nil || !strings.Contains(err.Error(), `no door "nope"`) {
		t.Fatalf("revoke of unknown door: %v", err)
	}
	if _, err := c.Revoke("ssh", "not-an-ip"); err == nil || !strings.Contains(err.Error(), "invalid source") {
		t.Fatalf("revoke of a bad address: %v", err)
	}
	out, err := c.Reload()
	if err != nil || out.Doors != 2 || len(out.Ended) != 1 || out.Ended[0] != "old 192.0.2.9" {
		t.Fatalf("reload: %+v, %v", out, err)
	}
	f.fail = errors.New("p.hcl:3:5: bad port")
	if _, err := c.Reload(); err == nil || err.Error() != "p.hcl:3:5: bad port" {
		t.Fatalf("refused reload: %v", err)
	}
}

func TestControlSocketRefusesSecondDaemon(t *testing.T) {
	sock := startControl(t, &fakeControl{})
	if _, err := ListenControl(sock); err == nil || !strings.Contains(err.Error(), "another knockgate") {
		t.Fatalf("second listen: %v", err)
	}
}

func TestControlSocketReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kg.sock")
	ln, err := ListenControl(path)
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // a dead daemon's socket file stays behind
	ln, err = ListenControl(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln.Close()
}

func TestControlSocketKeepsOtherFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.hcl")
	if err := os.WriteFile(path, []byte("door {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenControl(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("listen over a regular file: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the file in the way is gone: %v", err)
	}
}

func TestControlClientWithoutDaemon(t *testing.T) {
	_, err := Client{Socket: filepath.Join(t.TempDir(), "none.sock")}.Status()
	if err == nil || !strings.Contains(err.Error(), "is knockgate running") {
		t.Fatalf("status without a daemon: %v", err)
	}
}

// A socket exposed by a careless chmod still answers only root and the
// daemon's own user: the daemon checks the peer's credentials
// (SO_PEERCRED). The test connects as nobody from a copy of this test
// binary, which needs root to start.
func TestControlSocketRefusesOtherUsers(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root, to connect as another user")
	}
	// Directories nobody can enter: t.TempDir's parent and the go build
	// directory are 0700, so the socket and the binary go in one of ours.
	dir, err := os.MkdirTemp("", "knockgate-cred-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "kg.sock")
	ln, err := ListenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go ServeControl(ctx, ln, &fakeControl{}, slog.New(slog.DiscardHandler))
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "daemon.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, sock} {
		if err := os.Chmod(p, 0o777); err != nil { // the careless chmod
			t.Fatal(err)
		}
	}

	cmd := exec.Command(bin, "-test.run=^TestControlClientAsOtherUser$", "-test.v")
	cmd.Env = append(os.Environ(), "KNOCKGATE_TEST_CONTROL_SOCKET="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if errors.Is(err, syscall.EACCES) {
		t.Skipf("cannot run the client from %s (mounted noexec?): %v", dir, err)
	}
	if err != nil || !strings.Contains(string(out), "permission denied: only root may control knockgate") {
		t.Fatalf("status as uid 65534: %v\n%s", err, out)
	}
}

// TestControlClientAsOtherUser is TestControlSocketRefusesOtherUsers's
// client, run as nobody; on its own it does nothing.
func TestControlClientAsOtherUser(t *testing.T) {
	sock := os.Getenv("KNOCKGATE_TEST_CONTROL_SOCKET")
	if sock == "" {
		t.Skip("run by TestControlSocketRefusesOtherUsers")
	}
	st, err := Client{Socket: sock}.Status()
	if err == nil {
		t.Fatalf("status answered: %+v", st)
	}
	t.Log(err)
}
