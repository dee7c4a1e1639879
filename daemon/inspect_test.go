package daemon

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// Status gives each grant's actual ports, connections left and origin,
// the penalty box, and the knocks in progress; its JSON has [] for every
// empty list, never null.
func TestStatusShowsEverything(t *testing.T) {
	l := startLab(t, "", `
penalty {
  failures = 2
  within   = "1m"
  ban      = "10m"
}
door "ssh" {
  sequence        = ["udp/7000", "udp/7001"]
  open            = ["tcp/22"]
  open_for        = "1h"
  max_connections = 3
}
`+webDoor)
	c := Client{Socket: l.dir + "/kg.sock"}
	raw, err := json.Marshal(l.d.Status())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"bans", "knocks", "progress", "grants"} {
		if !strings.Contains(string(raw), `"`+key+`":[`) {
			t.Errorf("status JSON of an idle daemon lacks a list for %q: %s", key, raw)
		}
	}
	if strings.Contains(string(raw), "null") {
		t.Errorf("status JSON of an idle daemon has a null: %s", raw)
	}

	l.open("198.51.100.7", 7000)
	l.qs[0].feed(t, knock("198.51.100.8", 8000)) // web in progress
	for _, port := range []uint16{7001, 7001} {  // wrong first knocks: two failures ban
		l.qs[0].feed(t, knock("203.0.113.9", port))
	}
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	g := st.Doors[0].Grants
	if len(g) != 1 || strings.Join(g[0].Ports, ",") != "tcp/22" || g[0].ConnsLeft != 3 || g[0].Origin == "" || g[0].Origin != st.Node {
		t.Fatalf("ssh grant %+v", g)
	}
	if len(st.Bans) != 1 || st.Bans[0].Source.String() != "203.0.113.9" || st.Bans[0].LeftSeconds < 590 {
		t.Fatalf("bans %+v", st.Bans)
	}
	if len(st.Knocks) != 2 || st.Knocks[0] != (KnockCount{"ssh", 0}) || st.Knocks[1] != (KnockCount{"web", 1}) {
		t.Fatalf("knocks %+v", st.Knocks)
	}
	if len(st.Progress) != 1 || st.Progress[0].Source.String() != "198.51.100.8" || st.Progress[0].Step != 1 || st.Progress[0].Of != 2 {
		t.Fatalf("progress %+v", st.Progress)
	}

	if ok, err := c.Unban("203.0.113.9"); err != nil || !ok {
		t.Fatalf("unban: %v, %v", ok, err)
	}
	if ok, err := c.Unban("203.0.113.9"); err != nil || ok {
		t.Fatalf("second unban: %v, %v", ok, err)
	}
	if st, _ := c.Status(); len(st.Bans) != 0 {
		t.Fatalf("bans after unban %+v", st.Bans)
	}
	l.open("203.0.113.9", 7000)
	if dec := l.qs[0].feed(t, syn("203.0.113.9", 22)); dec.Verdict != verdict.Accept {
		t.Fatalf("knock after unban: %v", dec)
	}
	if n := len(l.logLines("ban lifted")); n != 1 {
		t.Fatalf("%d ban lifted lines, want 1", n)
	}
}

// Under a flood the report lists at most maxListed knocks in progress and
// counts the rest; the counts per door stay whole.
func TestStatusListsBounded(t *testing.T) {
	l := newLab(t)
	policy := fmt.Sprintf("gate {\n  state_file = \"\"\n  control_socket = %q\n  max_sources = 4000\n}\n%s", filepath.Join(l.dir, "kg.sock"), sshDoor)
	if err := os.WriteFile(l.policy, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	l.start()
	n := maxListed + 5
	for i := range n {
		p := knock("198.51.100.1", 7000)
		p.Src = netip.AddrFrom4([4]byte{198, 51, byte(100 + i/250), byte(1 + i%250)})
		l.d.eng.Decide(p, time.Now())
	}
	st := l.d.Status()
	if len(st.Progress) != maxListed || st.ProgressOmitted != 5 || st.Knocks[0].Sources != n {
		t.Fatalf("%d listed, %d omitted, %d counted; want %d, 5, %d", len(st.Progress), st.ProgressOmitted, st.Knocks[0].Sources, maxListed, n)
	}
}
