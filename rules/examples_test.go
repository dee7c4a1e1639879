package rules

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// The examples are documentation; parsing them here keeps them true.
func TestExamples(t *testing.T) {
	paths, err := filepath.Glob("../contrib/examples/*.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 3 {
		t.Fatalf("found %d examples in ../contrib/examples, want at least 3", len(paths))
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			p, err := Load(path)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(p.Doors) == 0 {
				t.Errorf("%s has no doors", path)
			}
			if _, err := verdict.NewEngine(p.Policy, time.Unix(0, 0)); err != nil {
				t.Errorf("the engine refuses %s: %v", path, err)
			}
		})
	}
}

// reference.hcl claims to show every default; hold it to that.
func TestReferenceHasDefaults(t *testing.T) {
	p, err := Load("../contrib/examples/reference.hcl")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if p.Queue != DefaultQueue || p.Queues != DefaultQueues || p.Unprotected != DefaultUnprotected ||
		p.MaxSources != verdict.DefaultMaxSources || p.MaxGrants != verdict.DefaultMaxGrants {
		t.Errorf("reference gate is queue %d, unprotected %v, max_sources %d, max_grants %d; want the defaults %d, %v, %d, %d",
			p.Queue, p.Unprotected, p.MaxSources, p.MaxGrants,
			DefaultQueue, DefaultUnprotected, verdict.DefaultMaxSources, verdict.DefaultMaxGrants)
	}
	if p.StateFile != DefaultStateFile || p.ControlSocket != DefaultControlSocket || p.MetricsListen != DefaultMetricsListen {
		t.Errorf("reference has state_file %q, control_socket %q, metrics listen %q; want the defaults %q, %q, %q",
			p.StateFile, p.ControlSocket, p.MetricsListen, DefaultStateFile, DefaultControlSocket, DefaultMetricsListen)
	}
	if len(p.Doors) != 1 {
		t.Fatalf("reference has %d doors, want 1", len(p.Doors))
	}
	d := p.Doors[0]
	if d.SequenceTimeout != DefaultSequenceTimeout || d.OpenFor != DefaultOpenFor {
		t.Errorf("reference door has sequence_timeout %v, open_for %v; want the defaults %v, %v",
			d.SequenceTimeout, d.OpenFor, DefaultSequenceTimeout, DefaultOpenFor)
	}
	if d.CloseSequence != nil || d.AllowFrom != nil {
		t.Errorf("reference door sets close_sequence %v, allow_from %v; both default to none", d.CloseSequence, d.AllowFrom)
	}
}

// A setting added to the language but not to reference.hcl would go
// undocumented; the raw structs' tags are the list of settings.
func TestReferenceMentionsEverySetting(t *testing.T) {
	src, err := os.ReadFile("../contrib/examples/reference.hcl")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []any{rawGate{}, rawMetrics{}, rawPenalty{}, rawDoor{}, rawSPA{}, rawTOTP{}} {
		ty := reflect.TypeOf(v)
		for i := range ty.NumField() {
			name, kind, _ := strings.Cut(ty.Field(i).Tag.Get("hcl"), ",")
			// Optional settings with no default appear commented out.
			after := `\s*=`
			if kind == "block" {
				after = `\s*\{`
			}
			re := regexp.MustCompile(`(?m)^\s*(#\s*)?` + regexp.QuoteMeta(name) + after)
			if !re.Match(src) {
				t.Errorf("reference.hcl does not show %s", name)
			}
		}
	}
}
