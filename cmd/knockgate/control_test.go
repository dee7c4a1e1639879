package main

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

func (f *fakeControl) status() *statusReport {
	return &statusReport{Version: "test", Policy: "/etc/p.hcl", TrackedSources: 3, MaxSources: 10,
		Doors: []doorStatus{{Name: "ssh", Grants: []grantStatus{{Source: netip.MustParseAddr("198.51.100.7"), LeftSeconds: 12,
			Until: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}}, {Name: "web"}}}
}

func (f *fakeControl) revoke(door string, src netip.Addr) (bool, error) {
	if door != "ssh" {
		return false, errors.New(`no door "` + door + `" in the policy`)
	}
	f.revoked = append(f.revoked, door+" "+src.String())
	return true, nil
}

func (f *fakeControl) reload(string) (*reloadOutcome, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	return &reloadOutcome{Doors: 2, Ended: []string{"old 192.0.2.9"}}, nil
}

func startControl(t *testing.T, h controlHandler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "kg.sock")
	ln, err := listenControl(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go serveControl(ctx, ln, h, slog.New(slog.DiscardHandler))
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

	code, out, errOut := runMain(t, "status", "--socket", sock)
	if code != 0 || !strings.Contains(out, "198.51.100.7") || !strings.Contains(out, "12s") || !strings.Contains(out, "web") {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = runMain(t, "status", "--socket", sock, "--json")
	if code != 0 || !strings.Contains(out, `"tracked_sources": 3`) {
		t.Fatalf("status --json: exit %d\n%s", code, out)
	}

	code, out, errOut = runMain(t, "revoke", "--socket", sock, "--door", "ssh", "--source", "2001:db8::1")
	if code != 0 || !strings.Contains(out, "revoked 2001:db8::1") || len(f.revoked) != 1 {
		t.Fatalf("revoke: exit %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = runMain(t, "revoke", "--socket", sock, "--door", "nope", "--source", "192.0.2.1")
	if code != 1 || !strings.Contains(errOut, `no door "nope"`) {
		t.Fatalf("revoke of unknown door: exit %d\n%s", code, errOut)
	}
	code, _, errOut = runMain(t, "revoke", "--socket", sock, "--door", "ssh", "--source", "not-an-ip")
	if code != 1 || !strings.Contains(errOut, "invalid source") {
		t.Fatalf("revoke of a bad address: exit %d\n%s", code, errOut)
	}

	code, out, _ = runMain(t, "reload", "--socket", sock)
	if code != 0 || !strings.Contains(out, "reloaded: 2 door(s)") || !strings.Contains(out, "old 192.0.2.9") {
		t.Fatalf("reload: exit %d\n%s", code, out)
	}
	f.fail = errors.New("p.hcl:3:5: bad port")
	code, _, errOut = runMain(t, "reload", "--socket", sock)
	if code != 1 || !strings.Contains(errOut, "running policy stays") || !strings.Contains(errOut, "p.hcl:3:5") {
		t.Fatalf("refused reload: exit %d\n%s", code, errOut)
	}
}

func TestControlSocketRefusesSecondDaemon(t *testing.T) {
	sock := startControl(t, &fakeControl{})
	if _, err := listenControl(sock); err == nil || !strings.Contains(err.Error(), "another knockgate") {
		t.Fatalf("second listen: %v", err)
	}
}

func TestControlSocketReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kg.sock")
	ln, err := listenControl(path)
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // a dead daemon's socket file stays behind
	ln, err = listenControl(path)
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
	if _, err := listenControl(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("listen over a regular file: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the file in the way is gone: %v", err)
	}
}

func TestControlClientWithoutDaemon(t *testing.T) {
	code, _, errOut := runMain(t, "status", "--socket", filepath.Join(t.TempDir(), "none.sock"))
	if code != 1 || !strings.Contains(errOut, "is knockgate running") {
		t.Fatalf("exit %d: %s", code, errOut)
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
	ln, err := listenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go serveControl(ctx, ln, &fakeControl{}, slog.New(slog.DiscardHandler))
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "knockgate.test")
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
	resp, err := callControl(sock, controlRequest{Op: "status"})
	if err == nil {
		t.Fatalf("status answered: %+v", resp.Status)
	}
	t.Log(err)
}
