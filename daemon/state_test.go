package daemon

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

func TestStateRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.json")
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	in := []verdict.Grant{
		{Door: "ssh", Source: netip.MustParseAddr("198.51.100.7"), Opened: now, Until: now.Add(30 * time.Second)},
		{Door: "web", Source: netip.MustParseAddr("2001:db8::7"), Opened: now, Until: now.Add(time.Hour),
			Ports: []verdict.Port{{Proto: verdict.UDP, Num: 443}}},
	}
	replay := []verdict.ReplayEntry{{Key: [20]byte{1, 2, 3, 19: 20}, Until: now.Add(2 * time.Minute)}}
	if err := saveState(path, state{grants: in, replay: replay}, now); err != nil {
		t.Fatal(err)
	}
	st, err := loadState(path)
	if err != nil {
		t.Fatal(err)
	}
	out := st.grants
	if len(out) != 2 || out[0].Source != in[0].Source || !out[1].Until.Equal(in[1].Until) || out[1].Door != "web" ||
		out[0].Ports != nil || len(out[1].Ports) != 1 || out[1].Ports[0] != in[1].Ports[0] {
		t.Fatalf("round trip: %+v", out)
	}
	if len(st.replay) != 1 || st.replay[0].Key != replay[0].Key || !st.replay[0].Until.Equal(replay[0].Until) {
		t.Fatalf("replay round trip: %+v", st.replay)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode: %v %v, want 0600", fi.Mode(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestStateMissingIsEmpty(t *testing.T) {
	gs, err := loadState(filepath.Join(t.TempDir(), "none.json"))
	if err != nil || gs.grants != nil || gs.replay != nil {
		t.Fatalf("missing state: %v, %v", gs, err)
	}
}

func TestStateCorrupt(t *testing.T) {
	for name, body := range map[string]string{
		"truncated":   `{"version":1,"grants":[{"door":"ssh","sou`,
		"garbage":     "\x00\x01binary",
		"version":     `{"version":99,"grants":[]}`,
		"bad address": `{"version":1,"grants":[{"door":"ssh","source":"999.1.1.1","until":"2026-01-01T00:00:00Z"}]}`,
		"no door":     `{"version":1,"grants":[{"source":"192.0.2.1","until":"2026-01-01T00:00:00Z"}]}`,
		"bad port":    `{"version":1,"grants":[{"door":"d","source":"192.0.2.1","until":"2026-01-01T00:00:00Z","ports":["tcp/0"]}]}`,
		"bad replay":  `{"version":1,"grants":[],"replay":[{"key":"abcd","until":"2026-01-01T00:00:00Z"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			os.WriteFile(path, []byte(body), 0o600)
			if _, err := loadState(path); !errors.Is(err, errCorruptState) {
				t.Fatalf("loadState = %v, want errCorruptState", err)
			}
			to, err := setAside(path, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(to); err != nil {
				t.Fatalf("set-aside file: %v", err)
			}
			if gs, err := loadState(path); err != nil || gs.grants != nil {
				t.Fatalf("after setting aside: %v, %v", gs, err)
			}
		})
	}
}

func FuzzLoadState(f *testing.F) {
	f.Add([]byte(`{"version":1,"saved":"2026-11-21T12:00:00Z","grants":[{"door":"ssh","source":"198.51.100.7","opened":"2026-11-21T12:00:00Z","until":"2026-11-21T12:00:30Z"}]}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "state.json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		gs, err := loadState(path)
		if err != nil {
			return
		}
		for _, g := range gs.grants {
			if g.Door == "" || !g.Source.IsValid() {
				t.Fatalf("loadState accepted an incomplete grant: %+v", g)
			}
		}
	})
}

// The grants saved when the daemon stops are back after a start, and
// still open their ports.
func TestRestoreAtStart(t *testing.T) {
	l := startLab(t, "", twoDoors)
	l.open("198.51.100.7", 7000)
	l.open("2001:db8::7", 8000)
	l.stop()
	if got := l.savedGrants(); len(got) != 2 {
		t.Fatalf("saved at stop: %v", got)
	}

	l.start()
	st := l.d.Status()
	if want := []string{"ssh 198.51.100.7", "web 2001:db8::7"}; !same(grants(st), want) {
		t.Fatalf("restored grants %v, want %v", grants(st), want)
	}
	if dec := l.qs[0].feed(t, syn("2001:db8::7", 443)); dec.Verdict != verdict.Accept {
		t.Fatalf("restored grant: %v", dec)
	}
	if lines := l.logLines("grants restored"); len(lines) != 1 || lines[0]["restored"] != 2.0 {
		t.Fatalf("grants restored lines %v", lines)
	}
}

// A state file that cannot be read is set aside, and the daemon starts
// without grants.
func TestRestoreSetsAsideCorruptState(t *testing.T) {
	l := newLab(t)
	l.writePolicy("", twoDoors)
	path := filepath.Join(l.dir, "state.json")
	if err := os.WriteFile(path, []byte(`{"version":1,"grants":[{"door":"ssh","sou`), 0o600); err != nil {
		t.Fatal(err)
	}
	l.start()
	if st := l.d.Status(); st.Grants != 0 {
		t.Fatalf("grants from a corrupt state file: %+v", st)
	}
	lines := l.logLines("state file unusable; starting with no grants")
	if len(lines) != 1 {
		t.Fatalf("%d unusable lines, want 1:\n%s", len(lines), l.logs)
	}
	to, _ := lines[0]["moved_to"].(string)
	if b, err := os.ReadFile(to); err != nil || !strings.HasPrefix(string(b), `{"version":1`) {
		t.Fatalf("set-aside file %q: %v", to, err)
	}
}
