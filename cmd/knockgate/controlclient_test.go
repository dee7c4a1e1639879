package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
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
	return &daemon.StatusReport{Version: "test", Policy: "/etc/p.hcl", TrackedSources: 3, MaxSources: 10, Node: "gw1",
		Doors: []daemon.DoorStatus{{Name: "ssh", Grants: []daemon.GrantStatus{{Source: netip.MustParseAddr("198.51.100.7"), LeftSeconds: 12,
			Until: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Ports: []string{"tcp/22"}, ConnsLeft: 2, Origin: "gw1"}}}, {Name: "web"}},
		Bans:     []daemon.BanStatus{{Source: netip.MustParseAddr("203.0.113.9"), LeftSeconds: 300}},
		Knocks:   []daemon.KnockCount{{Door: "ssh", Sources: 0}, {Door: "web", Sources: 1}},
		Progress: []daemon.ProgressStatus{{Door: "web", Source: netip.MustParseAddr("198.51.100.8"), Step: 1, Of: 2}},
		Health:   "degraded", Degraded: "failed to listen for metrics on 127.0.0.1:9100"}
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
	return &daemon.ReloadOutcome{Doors: 2, Ended: []string{"old 192.0.2.9"}, RestartOnly: []string{"queue"}}, nil
}

func (f *daemonAnswers) Unban(src netip.Addr) bool { return src == netip.MustParseAddr("203.0.113.9") }

// serveAnswers serves h on a control socket of its own until the test
// ends, as the daemon would, and returns the socket's path.
func serveAnswers(t *testing.T, h daemon.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "kg.sock")
	ln, err := daemon.ListenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go daemon.ServeControl(ctx, ln, h, slog.New(slog.DiscardHandler))
	return sock
}

func TestControlCommands(t *testing.T) {
	f := &daemonAnswers{}
	sock := serveAnswers(t, f)

	code, out, errOut := runMain(t, "status", "--socket", sock)
	if code != 0 || !strings.Contains(out, "198.51.100.7") || !strings.Contains(out, "12s") || !strings.Contains(out, "web") {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	// Every grant with its ports, connections left and origin; the
	// penalty box; knocks per door, and per source with --verbose.
	for _, want := range []string{"gw1", "tcp/22", "5m0s", "203.0.113.9", "web 1;", "DEGRADED: failed to listen for metrics"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "198.51.100.8") {
		t.Errorf("status without --verbose lists knocks per source:\n%s", out)
	}
	if code, out, _ = runMain(t, "status", "--socket", sock, "--verbose"); code != 0 || !strings.Contains(out, "198.51.100.8") || !strings.Contains(out, "1 of 2") {
		t.Errorf("status --verbose: exit %d\n%s", code, out)
	}
	// The socket can come from the policy.
	policy := filepath.Join(t.TempDir(), "p.hcl")
	if err := os.WriteFile(policy, []byte(fmt.Sprintf("gate {\n  control_socket = %q\n}\n", sock)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut = runMain(t, "status", "--config", policy); code != 0 || !strings.Contains(out, "gw1") {
		t.Fatalf("status --config: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, _ = runMain(t, "unban", "--config", policy, "--source", "203.0.113.9"); code != 0 || !strings.Contains(out, "lifted 203.0.113.9's ban") {
		t.Fatalf("unban: exit %d\n%s", code, out)
	}
	if code, out, _ = runMain(t, "unban", "--socket", sock, "--source", "192.0.2.1"); code != 0 || !strings.Contains(out, "192.0.2.1 was not banned") {
		t.Fatalf("unban of a source not banned: exit %d\n%s", code, out)
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
	if code != 0 || !strings.Contains(out, "reloaded: 2 door(s)") || !strings.Contains(out, "old 192.0.2.9") ||
		!strings.Contains(out, "warning: queue changed, but takes effect at the next restart") {
		t.Fatalf("reload: exit %d\n%s", code, out)
	}
	f.fail = errors.New("p.hcl:3:5: bad port")
	code, _, errOut = runMain(t, "reload", "--socket", sock)
	if code != 1 || !strings.Contains(errOut, "running policy stays") || !strings.Contains(errOut, "p.hcl:3:5") {
		t.Fatalf("refused reload: exit %d\n%s", code, errOut)
	}
}

// Without a daemon the commands say that none answered, with an exit
// status of their own, and never that the daemon refused.
func TestControlCommandsWithoutDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, args := range [][]string{
		{"status", "--socket", sock}, {"reload", "--socket", sock},
		{"revoke", "--socket", sock, "--door", "ssh", "--source", "192.0.2.1"},
	} {
		code, _, errOut := runMain(t, args...)
		if code != exitNoDaemon || !strings.Contains(errOut, "no daemon answered") || strings.Contains(errOut, "refused") {
			t.Errorf("%v: exit %d: %s", args, code, errOut)
		}
	}
}

// --watch redraws in place: it clears the screen before each report, and
// stops when its context ends.
func TestWatchLoop(t *testing.T) {
	var out strings.Builder
	ctx, cancel := context.WithCancel(context.Background())
	draws := 0
	err := watchLoop(ctx, &out, time.Millisecond, func() error {
		draws++
		fmt.Fprintf(&out, "report %d\n", draws)
		if draws == 3 {
			cancel()
		}
		return nil
	})
	if err != nil || draws != 3 {
		t.Fatalf("watchLoop: %v after %d draws", err, draws)
	}
	if want := "\x1b[H\x1b[2Jreport 1\n\x1b[H\x1b[2Jreport 2\n\x1b[H\x1b[2Jreport 3\n"; out.String() != want {
		t.Fatalf("output %q, want %q", out.String(), want)
	}
	if code, _, errOut := runMain(t, "status", "--watch", "-1"); code != 2 || !strings.Contains(errOut, "invalid --watch -1") {
		t.Fatalf("status --watch -1: exit %d: %s", code, errOut)
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
	sock := serveAnswers(t, &degradedAnswers{})

	code, out, errOut := runMain(t, "status", "--socket", sock)
	if code != 0 || !strings.Contains(out, "DEGRADED: the state file cannot be saved: no space left on device") ||
		!strings.Contains(out, "state file: 3 failed saves") ||
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
