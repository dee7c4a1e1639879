package main

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/knockgate/knockgate/daemon"
)

// daemonAnswers is the daemon's side of the control socket as the
// commands' output depends on it: fixed answers, served by the daemon's
// own control server.
type daemonAnswers struct {
	revoked []string
	fail    error
}

func (f *daemonAnswers) Status() *daemon.StatusReport {
	return &daemon.StatusReport{Version: "test", Policy: "/etc/p.hcl", TrackedSources: 3, MaxSources: 10,
		Doors: []daemon.DoorStatus{{Name: "ssh", Grants: []daemon.GrantStatus{{Source: netip.MustParseAddr("198.51.100.7"), LeftSeconds: 12,
			Until: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}}, {Name: "web"}}}
}

func (f *daemonAnswers) Revoke(door string, src netip.Addr) (bool, error) {
	if door != "ssh" {
		return false, errors.New(`no door "` + door + `" in the policy`)
	}
	f.revoked = append(f.revoked, door+" "+src.String())
	return true, nil
}

func (f *daemonAnswers) Reload(string) (*daemon.ReloadOutcome, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	return &daemon.ReloadOutcome{Doors: 2, Ended: []string{"old 192.0.2.9"}}, nil
}

func TestControlCommands(t *testing.T) {
	f := &daemonAnswers{}
	sock := filepath.Join(t.TempDir(), "kg.sock")
	ln, err := daemon.ListenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go daemon.ServeControl(ctx, ln, f, slog.New(slog.DiscardHandler))

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

func TestControlCommandsWithoutDaemon(t *testing.T) {
	code, _, errOut := runMain(t, "status", "--socket", filepath.Join(t.TempDir(), "none.sock"))
	if code != 1 || !strings.Contains(errOut, "is knockgate running") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}
