package daemon

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/knockgate/knockgate/rules"
	"github.com/knockgate/knockgate/verdict"
	"github.com/knockgate/knockgate/verdict/fwknop"
)

// The daemon logs one line per grant opened, revoked and expired, with door
// and source.
func TestDaemonLogsGrants(t *testing.T) {
	t0 := time.Now()
	p := verdict.Policy{Unprotected: verdict.Accept, Doors: []verdict.Door{{
		Name: "ssh", Sequence: []verdict.Port{{Proto: verdict.UDP, Num: 7000}}, SequenceTimeout: time.Second,
		CloseSequence: []verdict.Port{{Proto: verdict.UDP, Num: 7001}},
		Open:          []verdict.Port{{Proto: verdict.TCP, Num: 22}}, OpenFor: 10 * time.Second,
	}}}
	var buf bytes.Buffer
	d, err := New(Config{Policy: &rules.Policy{Policy: p}, Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	eng := d.eng
	src := netip.MustParseAddr("198.51.100.7")
	other := netip.MustParseAddr("2001:db8::7")
	for _, step := range []struct {
		src  netip.Addr
		port uint16
		at   time.Duration
	}{{src, 7000, 0}, {other, 7000, 0}, {other, 7001, time.Second}} {
		pk := verdict.Packet{Src: step.src, Proto: verdict.UDP, SrcPort: 1, DstPort: step.port}
		d.observe(pk, eng.Decide(pk, t0.Add(step.at)), 0)
	}
	d.sweep(t0.Add(11 * time.Second))

	var got []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		got = append(got, m["msg"].(string)+" "+m["door"].(string)+" "+m["source"].(string))
	}
	want := []string{
		"grant opened ssh 198.51.100.7",
		"grant opened ssh 2001:db8::7",
		"grant revoked ssh 2001:db8::7",
		"grant expired ssh 198.51.100.7",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A decision taken before a reload that renumbers the doors, and logged
// after it, names the door that decided it.
func TestObserveNamesDoorsAfterReload(t *testing.T) {
	l := startLab(t, "", twoDoors)
	l.qs[0].feed(t, knock("198.51.100.7", 8000))
	p := knock("198.51.100.7", 8001)
	dec := l.d.eng.Decide(p, time.Now()) // web, door 1, opens
	l.writePolicy("", webDoor+sshDoor)
	if _, err := l.d.Reload("test"); err != nil {
		t.Fatal(err)
	}
	l.d.observe(p, dec, 0)
	lines := l.logLines("grant opened")
	if len(lines) != 1 || lines[0]["door"] != "web" || lines[0]["ports"] != "tcp/443" {
		t.Fatalf("grant opened lines %v, want web's", lines)
	}
}

// A grant an SPA packet opened is logged as such, with the ports and time
// the packet asked for, and one a knock sequence of the same door opened
// as a knock, with the door's.
func TestObserveLogsSPAGrant(t *testing.T) {
	key, hmacKey := freshSPAKeys()
	l := startLab(t, "", fmt.Sprintf(`
door "nas" {
  sequence = ["udp/7000", "udp/7001"]
  open     = ["tcp/445", "tcp/22"]
  spa {
    port            = "udp/62201"
    key_base64      = %q
    hmac_key_base64 = %q
  }
}
`, key, hmacKey))
	door, _ := doorNamed(l.d.eng.Policy(), "nas")
	src := netip.MustParseAddr("198.51.100.7")
	payload, err := fwknop.EncodeRandom(&fwknop.Message{Username: "test", Timestamp: time.Now(), Version: "3.0.0",
		Type: fwknop.TypeTimeoutAccess, ClientTimeout: 5, AllowIP: src, Ports: []fwknop.Port{{Proto: uint8(verdict.TCP), Num: 22}}}, door.SPA.Keys, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := verdict.Packet{Src: src, Proto: verdict.UDP, SrcPort: 40000, DstPort: 62201, Payload: payload}
	if dec := l.qs[0].feed(t, p); dec.Reason != verdict.ReasonOpened {
		t.Fatalf("SPA packet: %v", dec)
	}
	l.open("2001:db8::7", 7000)
	var got []string
	for _, line := range l.logLines("grant opened") {
		got = append(got, line["door"].(string)+" "+line["source"].(string)+" "+line["by"].(string)+" "+line["ports"].(string)+" "+line["open_for"].(string))
	}
	// The SPA packet asked for tcp/22 for 5 s: the line says so, not the
	// door's ports and open_for.
	if want := []string{"nas 198.51.100.7 spa tcp/22 5s", "nas 2001:db8::7 knock tcp/445,tcp/22 30s"}; !same(got, want) {
		t.Fatalf("grant opened lines %q, want %q", got, want)
	}
}
