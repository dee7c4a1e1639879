//go:build integration

package integration

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A reload keeps grants and knocks in progress of doors that remain, a
// removed door's grants end (its port stays closed until restart), and an
// invalid policy is refused with its
// diagnostics while the running policy and its grants stay.
func TestReloadKeepsGrants(t *testing.T) {
	l := newLab(t)
	l.doors = strings.Replace(policy, `open_for         = "4s"`, `open_for         = "60s"`, 1)
	l.start()
	l.knock("c1", v4, v4.gwForC1, "7000", "8000:udp", "9000")
	l.wantConnect("c1", v4.gwForC1, 22)
	l.knock("c1", v6, v6.gwForC1, "3000", "4000", "5000")
	l.wantConnect("c1", v6.gwForC1, 443)
	l.knock("c2", v4, v4.gwForC2, "7000", "8000:udp") // halfway through

	// The new policy keeps ssh, drops "ascending" and adds "extra".
	newDoors := strings.Replace(l.doors, `door "ascending"`, `door "extra" {
  sequence = ["udp/6500"]
  open     = ["tcp/80"]
  open_for = "60s"
}

door "gone"`, 1)
	newDoors = strings.Replace(newDoors, `door "gone" {
  sequence = ["tcp/3000", "tcp/4000", "tcp/5000"]
  open     = ["tcp/443"]
  open_for = "60s"
}`, "", 1)
	l.writePolicy(newDoors)
	if err := l.daemon.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	l.waitLog("policy reloaded", 5*time.Second, "by=SIGHUP")
	l.waitLog("grant ended", time.Second, "door=ascending", "source="+v6.c1.String())
	l.wantConnect("c1", v4.gwForC1, 22) // grant kept
	// Door gone: 443 is no longer protected, but stays closed until
	// restart, and the daemon says so.
	l.wantTimeout("c1", v6.gwForC1, 443)
	l.waitLog("stay closed until restart", time.Second, "ports=tcp/443")
	l.knock("c2", v4, v4.gwForC2, "9000") // the rest of the sequence
	l.wantConnect("c2", v4.gwForC2, 22)
	l.wantTimeout("c1", v6.gwForC1, 80) // extra's port is protected now

	// A broken policy: refused with file:line:col, nothing changes.
	broken := strings.Replace(newDoors, `open     = ["tcp/80"]`, `open     = ["tcp/80", "tcp/70000"]`, 1)
	l.writePolicy(broken)
	out, err := l.run("", binPath, "reload", "--socket", l.socket())
	if err == nil || !strings.Contains(out, l.config()+":") || !strings.Contains(out, "70000") || !strings.Contains(out, "running policy stays") {
		t.Fatalf("reload of a broken policy: %v\n%s", err, out)
	}
	l.waitLog("policy reload refused", 2*time.Second)
	l.wantConnect("c1", v4.gwForC1, 22)
	l.must("ip", "netns", "exec", l.ns("c1"), "knock", "-6", v6.gwForC1.String(), "6500:udp")
	l.wantConnect("c1", v6.gwForC1, 80) // the last good policy still runs
}

// kill -9 in the middle of a grant, start again: the grant is back and
// still expires on time. A corrupt state file is set aside, never a crash
// and never an open door.
func TestRestartKeepsGrants(t *testing.T) {
	l := newLab(t)
	l.doors = strings.Replace(policy, `open_for         = "4s"`, `open_for         = "8s"`, 1)
	l.start()
	for _, fam := range families {
		l.knock("c1", fam, fam.gwForC1, "7000", "8000:udp", "9000")
	}
	opened := time.Now()
	l.wantConnect("c1", v4.gwForC1, 22)
	// A grant reaches the disk within the daemon's save gap (250 ms; a
	// revoke at once): the crash comes once both are there.
	deadline := time.Now().Add(2 * time.Second)
	for b, _ := os.ReadFile(l.stateFile()); !strings.Contains(string(b), v4.c1.String()) || !strings.Contains(string(b), v6.c1.String()); b, _ = os.ReadFile(l.stateFile()) {
		if time.Now().After(deadline) {
			t.Fatalf("the grants were not saved within 2s: %s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.kill()
	l.start()
	l.waitLog("grants restored", time.Second, "restored=2")
	for _, fam := range families {
		l.wantConnect("c1", fam.gwForC1, 22)
		l.wantTimeout("c2", fam.gwForC2, 22)
	}
	l.waitLog("grant expired", 10*time.Second, "door=ssh", "source="+v4.c1.String())
	if held := time.Since(opened); held < 7*time.Second || held > 10*time.Second {
		t.Fatalf("the restored grant expired %v after the knock, want about 8s", held)
	}
	l.wantTimeout("c1", v4.gwForC1, 22)

	// A grant, then a state file torn mid-write.
	l.knock("c1", v4, v4.gwForC1, "7000", "8000:udp", "9000")
	l.wantConnect("c1", v4.gwForC1, 22)
	l.kill()
	b, err := os.ReadFile(l.stateFile())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.stateFile(), b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	l.start()
	l.waitLog("state file unusable", time.Second)
	if m, _ := filepath.Glob(l.stateFile() + ".corrupt-*"); len(m) != 1 {
		t.Fatalf("corrupt state file not set aside: %v", m)
	}
	l.wantTimeout("c1", v4.gwForC1, 22)
	l.knock("c1", v4, v4.gwForC1, "7000", "8000:udp", "9000")
	l.wantConnect("c1", v4.gwForC1, 22)
}

// The operator sees grants with knockgate status and ends one at once with
// knockgate revoke, over the root-only control socket.
func TestOperatorStatusAndRevoke(t *testing.T) {
	l := newLab(t)
	l.doors = strings.Replace(policy, `open_for         = "4s"`, `open_for         = "60s"`, 1)
	l.start()
	l.knock("c1", v6, v6.gwForC1, "7000", "8000:udp", "9000")
	l.wantConnect("c1", v6.gwForC1, 22)
	out := l.must(binPath, "status", "--socket", l.socket())
	if !strings.Contains(out, "ssh") || !strings.Contains(out, v6.c1.String()) {
		t.Fatalf("status does not show the grant:\n%s", out)
	}
	out = l.must(binPath, "revoke", "--socket", l.socket(), "--door", "ssh", "--source", v6.c1.String())
	if !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: %s", out)
	}
	l.wantTimeout("c1", v6.gwForC1, 22)
	if out := l.must(binPath, "status", "--socket", l.socket()); strings.Contains(out, v6.c1.String()) {
		t.Fatalf("status still shows the revoked grant:\n%s", out)
	}
	if fi, err := os.Stat(l.socket()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	// Anyone but root is turned away.
	out, err := l.run("", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", binPath, "status", "--socket", l.socket())
	if err == nil {
		t.Fatalf("an unprivileged user could query the daemon:\n%s", out)
	}
}

// The metrics endpoint shows the counters of a real knock.
func TestMetricsDuringKnock(t *testing.T) {
	l := newLab(t)
	l.start()
	l.knock("c1", v4, v4.gwForC1, "7000", "8000:udp", "9000")
	l.wantConnect("c1", v4.gwForC1, 22)
	l.wantTimeout("c2", v4.gwForC2, 22)

	body := l.scrape("/metrics")
	for _, want := range []string{
		`knockgate_grants_total{door="ssh",event="opened"} 1`,
		`knockgate_knocks_total{door="ssh",result="advanced"} 2`,
		`knockgate_knocks_total{door="ssh",result="completed"} 1`,
		`knockgate_active_grants{door="ssh"} 1`,
		`knockgate_packets_total{reason="granted",verdict="accept"} 1`,
		`knockgate_packets_total{reason="no_grant",verdict="drop"}`,
		`knockgate_kernel_queue_length{queue="0"}`,
		`knockgate_build_info{`,
		`knockgate_decision_duration_seconds_count`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
	if got := l.scrape("/-/ready"); !strings.Contains(strings.ToLower(got), "ready") {
		t.Errorf("/-/ready: %q", got)
	}
}

// scrape fetches a path of the daemon's metrics endpoint, from inside the
// gateway where it listens on loopback.
func (l *lab) scrape(path string) string {
	l.t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := l.inNS("gw", func() error {
			var err error
			c, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://" + l.metricsAddr() + path)
	if err != nil {
		l.t.Fatalf("scrape %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		l.t.Fatalf("scrape %s: status %d, %v", path, resp.StatusCode, err)
	}
	return string(b)
}
