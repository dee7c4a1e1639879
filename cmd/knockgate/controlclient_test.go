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

// degradedAnswers is a daemon whose state file cannot be saved and whose
// last reload stopped protecting ports.
type degradedAnswers struct{ daemonAnswers }

func (f *degradedAnswers) Status() *daemon.StatusReport {
	st := f.daemonAnswers.Status()
	st.Health, st.Degraded = "degraded", "the state file cannot be saved: no space left on device"
	st.StateFile = daemon.StateFileStatus{Path: "/var/lib/knockgate/state.json", SaveFailures: 3, LastError: "no space left on device"}
	st.HeldClosed = []string{"tcp/8443"}
	return st
}

func (f *degradedAnswers) Reload(string) (*daemon.ReloadOutcome, error) {
	return &daemon.ReloadOutcome{Doors: 1, HeldClosed: []string{"tcp/8443", "udp/8443"}}, nil
}

// status says the daemon is degraded and which ports a reload left closed;
// reload lists the ports it stopped protecting.
func TestControlCommandsDegraded(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "kg.sock")
	ln, err := daemon.ListenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go daemon.ServeControl(ctx, ln, &degradedAnswers{}, slog.New(slog.DiscardHandler))

	code, out, errOut := runMain(t, "status", "--socket", sock)
	if code != 0 || !strings.Contains(out, "degraded: the state file cannot be saved: no space left on device (3 failed saves)") ||
		!strings.Contains(out, "closed until restart") || !strings.Contains(out, "tcp/8443") {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = runMain(t, "status", "--socket", sock, "--json")
	if code != 0 || !strings.Contains(out, `"health": "degraded"`) || !strings.Contains(out, `"save_failures": 3`) {
		t.Fatalf("status --json: exit %d\n%s", code, out)
	}
	code, out, _ = runMain(t, "reload", "--socket", sock)
	if code != 0 || !strings.Contains(out, "closed until restart: [tcp/8443 udp/8443]") {
		t.Fatalf("reload: exit %d\n%s", code, out)
	}
}
