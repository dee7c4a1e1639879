package daemon

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// A metrics port already taken does not stop the gate: it decides
// packets, says it is degraded, and binds once the port is free.
func TestMetricsPortTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := taken.Addr().String()
	l := newLab(t)
	l.metricsRetry = 20 * time.Millisecond
	l.writePolicy("", "metrics {\n  listen = \""+addr+"\"\n}\n"+sshDoor)
	l.start()
	l.open("198.51.100.7", 7000)
	if dec := l.qs[0].feed(t, syn("198.51.100.7", 22)); dec.Verdict != verdict.Accept {
		t.Fatalf("the gate stopped deciding: %v", dec)
	}
	st, err := Client{Socket: l.dir + "/kg.sock"}.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Health != "degraded" || !strings.Contains(st.Degraded, addr) {
		t.Fatalf("health %q, degraded %q, want the metrics listen error", st.Health, st.Degraded)
	}
	if n := len(l.logLines("metrics endpoint unavailable; the gate keeps deciding packets and retries the listener")); n != 1 {
		t.Fatalf("%d error lines, want 1:\n%s", n, l.logs)
	}
	taken.Close()
	eventually(t, "metrics bound after the port was freed", func() bool {
		resp, err := http.Get("http://" + addr + "/-/healthy")
		if err != nil {
			return false
		}
		resp.Body.Close()
		st := l.d.Status()
		return resp.StatusCode == 200 && st.Health == "ok" && st.Degraded == ""
	})
}
