package rules

import (
	"reflect"
	"slices"
	"testing"
)

func TestRestartOnlyChanges(t *testing.T) {
	const door = `door "ssh" {
  sequence = ["udp/7000", "udp/7001"]
  open     = ["tcp/22"]
}
`
	const spaDoor = `door "nas" {
  open = ["tcp/445"]
  spa {
    key_base64      = "RVhBTVBMRS1LRVktdXNlLWtub2NrZ2F0ZS1rZXlnZW4="
    hmac_key_base64 = "RVhBTVBMRS1ITUFDLUtFWS1wdWJsaXNoZWQtaW4tZG9jcy1yZXBsYWNlLXdpdGgta25vY2tnYXRlLWtleWdlbg=="
  }
}
`
	running := mustParse(t, door, "test.hcl")
	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"nothing", door, nil},
		{"doors and state file only", "gate {\n  state_file = \"/var/lib/kg/other.json\"\n}\n" + door, nil},
		{"queue and fail-open", "gate {\n  queue = 3\n  fail_open = true\n}\n" + door, []string{"queue", "fail_open"}},
		{"queues, sockets, mark", "gate {\n  queues = 2\n  control_socket = \"/run/kg/other.sock\"\n  accept_mark = \"0x10000/0xff0000\"\n}\nmetrics {\n  listen = \"127.0.0.1:9999\"\n}\n" + door,
			[]string{"queues", "metrics listen", "control_socket", "accept_mark"}},
		{"first spa door", door + spaDoor, []string{"spa (copy range)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RestartOnlyChanges(running, mustParse(t, tc.src, "test.hcl")); !slices.Equal(got, tc.want) {
				t.Errorf("RestartOnlyChanges = %q, want %q", got, tc.want)
			}
		})
	}
	// Dropping the last SPA door needs no restart: the copy range is only
	// larger than needed.
	if got := RestartOnlyChanges(mustParse(t, door+spaDoor, "test.hcl"), running); got != nil {
		t.Errorf("SPA door removed: %q, want none", got)
	}
}

func TestKeepRestartOnly(t *testing.T) {
	running := mustParse(t, "gate {\n  queue = 3\n  queues = 2\n  fail_open = true\n}\n", "test.hcl")
	next := mustParse(t, "gate {\n  queue = 7\n  state_file = \"/var/lib/kg/new.json\"\n}\nmetrics {\n  listen = \"127.0.0.1:9999\"\n}\n", "test.hcl")
	next.KeepRestartOnly(running)
	if RestartOnlyChanges(running, next) != nil || next.StateFile != "/var/lib/kg/new.json" {
		t.Fatalf("after KeepRestartOnly: %+v", next)
	}
}

// Every setting of Policy is either one a reload applies or a
// restart-only one that RestartOnlyChanges names: a new setting must be
// sorted into one of the two here.
func TestRestartOnlyCoversSettings(t *testing.T) {
	reloadable := []string{"Policy", "File", "StateFile", "named"}
	// Cluster is partly both: its peers reload, the rest does not
	// (KeepClusterRestartOnly, TestClusterRestartOnly).
	restartOnly := []string{"Queue", "Queues", "MetricsListen", "ControlSocket", "FailOpen", "AcceptMark", "AcceptMask", "Cluster"}
	for _, f := range reflect.VisibleFields(reflect.TypeFor[Policy]()) {
		if len(f.Index) > 1 {
			continue // verdict.Policy's own fields: the doors and limits, which a reload applies
		}
		if !slices.Contains(reloadable, f.Name) && !slices.Contains(restartOnly, f.Name) {
			t.Errorf("Policy.%s is new: make RestartOnlyChanges and KeepRestartOnly cover it, or list it as reloadable here", f.Name)
		}
	}
}
