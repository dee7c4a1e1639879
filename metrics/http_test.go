package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/knockgate/knockgate/internal/logbuf"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestHandler(t *testing.T) {
	m := New("v9", Sources{ProcPath: "testdata/does-not-exist"})
	var ready atomic.Bool
	srv := httptest.NewServer(m.Handler(ready.Load))
	defer srv.Close()

	if code, body := get(t, srv.URL+"/metrics"); code != 200 || !strings.Contains(body, `knockgate_build_info{goversion="`) ||
		!strings.Contains(body, `version="v9"} 1`) || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
	if code, body := get(t, srv.URL+"/-/healthy"); code != 200 || body != "ok\n" {
		t.Errorf("/-/healthy: %d %q", code, body)
	}
	if code, _ := get(t, srv.URL+"/-/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/-/ready before ready: %d, want 503", code)
	}
	ready.Store(true)
	if code, _ := get(t, srv.URL+"/-/ready"); code != 200 {
		t.Errorf("/-/ready when ready: %d, want 200", code)
	}
	if code, _ := get(t, srv.URL+"/"); code != http.StatusNotFound {
		t.Errorf("/: %d, want 404", code)
	}
	resp, err := http.Post(srv.URL+"/-/healthy", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /-/healthy: %d, want 405", resp.StatusCode)
	}

	// A nil ready func means always ready.
	srv2 := httptest.NewServer(m.Handler(nil))
	defer srv2.Close()
	if code, _ := get(t, srv2.URL+"/-/ready"); code != 200 {
		t.Errorf("/-/ready with nil func: %d, want 200", code)
	}
}

func TestServeBadAddress(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:99999", "no-such-host.invalid:1", "127.0.0.1"} {
		if err := Serve(t.Context(), addr, http.NotFoundHandler(), nil); err == nil {
			t.Errorf("Serve(%q) = nil, want an error", addr)
		}
	}
	// An address in use is refused at once, not later in the background.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := Serve(t.Context(), ln.Addr().String(), http.NotFoundHandler(), nil); err == nil {
		t.Error("Serve on a port in use = nil, want an error")
	}
}

func TestServeStopsWithContext(t *testing.T) {
	m := New("v9", Sources{ProcPath: "testdata/does-not-exist"})
	var logs logbuf.Buffer
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if err := Serve(ctx, "127.0.0.1:0", m.Handler(nil), slog.New(slog.NewJSONHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	// Serve logs the address it bound, which is how port 0 is found.
	var line struct{ Addr string }
	first, _, _ := strings.Cut(logs.String(), "\n")
	err := json.Unmarshal([]byte(first), &line)
	if err != nil || line.Addr == "" {
		t.Fatalf("no address in the log: %v", err)
	}
	if code, _ := get(t, "http://"+line.Addr+"/-/healthy"); code != 200 {
		t.Fatalf("/-/healthy: %d", code)
	}
	http.DefaultClient.CloseIdleConnections()

	cancel()
	deadline := time.Now().Add(shutdownGrace + 5*time.Second)
	for {
		c, err := net.DialTimeout("tcp", line.Addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still listening after the context was cancelled")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A failed save of the state file is counted, and readiness says degraded
// (still 200: packets are decided as before) until a save succeeds.
func TestStateSaveFailures(t *testing.T) {
	m := New("v9", Sources{ProcPath: "testdata/does-not-exist"})
	srv := httptest.NewServer(m.Handler(nil))
	defer srv.Close()
	m.StateSaved(nil)
	m.StateSaved(errors.New("no space left on device"))
	m.StateSaved(errors.New("no space left on device"))
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(`
# HELP knockgate_state_save_failures_total Saves of the state file that failed: the grants they held will not survive a restart.
# TYPE knockgate_state_save_failures_total counter
knockgate_state_save_failures_total 2
`), "knockgate_state_save_failures_total"); err != nil {
		t.Error(err)
	}
	if code, body := get(t, srv.URL+"/-/ready"); code != 200 || body != "degraded: the state file cannot be saved: no space left on device\n" {
		t.Errorf("/-/ready after a failed save: %d %q", code, body)
	}
	m.StateSaved(nil)
	if code, body := get(t, srv.URL+"/-/ready"); code != 200 || body != "ready\n" {
		t.Errorf("/-/ready after a save: %d %q", code, body)
	}
	if problems, err := testutil.CollectAndLint(m.saveFailures); err != nil || len(problems) != 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}
