package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/knockgate/knockgate/verdict"
)

// writePolicyFile writes src to a policy file in a temporary directory.
func writePolicyFile(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const failOpenPolicy = `
gate {
  queue       = 5
  fail_open   = true
  accept_mark = "0x100/0x300"
}

door "ssh" {
  sequence = ["tcp/7000", "udp/8000", "tcp/9000"]
  open     = ["tcp/23", "tcp/22", "udp/51820"]
}

door "lan" {
  sequence = ["udp/6100"]
  open     = ["tcp/2222", "tcp/22", "tcp/2224", "tcp/2223"]
}
`

// In fail-open mode the rules queue with --queue-bypass and drop, in mangle
// INPUT and FORWARD, new connections to every protected port that lack the
// accept mark, for both families; the queue number and the mark come from
// the policy.
func TestRulesFailOpen(t *testing.T) {
	cfg := writePolicyFile(t, failOpenPolicy)
	code, out, errOut := runMain(t, "rules", "--config", cfg, "--interface", "wan0",
		"--dnat", "tcp/2222=192.0.2.10:22", "--dnat", "tcp/2222=[2001:db8:2::10]:22")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	v4, v6, ok := strings.Cut(out, "# ---- ip6tables-restore --noflush ----")
	if !ok {
		t.Fatalf("no IPv6 section:\n%s", out)
	}
	// The mangle table of each section, rule for rule.
	wantMangle := `*mangle
:KNOCKGATE - [0:0]
:KNOCKGATE-PROTECTED - [0:0]
-A PREROUTING -i wan0 -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW -j KNOCKGATE
-A KNOCKGATE -p tcp -j NFQUEUE --queue-num 5 --queue-bypass
-A KNOCKGATE -p udp -j NFQUEUE --queue-num 5 --queue-bypass
-I INPUT -i wan0 -m conntrack --ctstate NEW -m mark ! --mark 0x100/0x300 -j KNOCKGATE-PROTECTED
-I FORWARD -i wan0 -m conntrack --ctstate NEW -m conntrack --ctstate DNAT -m mark ! --mark 0x100/0x300 -j KNOCKGATE-PROTECTED
-A KNOCKGATE-PROTECTED -m conntrack --ctproto tcp --ctorigdstport 22:23 -j DROP
-A KNOCKGATE-PROTECTED -m conntrack --ctproto tcp --ctorigdstport 2222:2224 -j DROP
-A KNOCKGATE-PROTECTED -m conntrack --ctproto udp --ctorigdstport 51820 -j DROP
COMMIT
`
	for name, sec := range map[string]string{"IPv4": v4, "IPv6": v6} {
		if !strings.Contains(sec, wantMangle) {
			t.Errorf("%s section lacks the mangle rules\n%s\nin:\n%s", name, wantMangle, sec)
		}
		for _, want := range []string{
			"FAIL-OPEN, for the policy " + cfg,
			"Protected ports:\n#   tcp/22 tcp/23 tcp/2222 tcp/2223 tcp/2224 udp/51820\n",
			"These rules depend on the policy's protected ports",
			"knockgate rules --config " + cfg + "\n",
			"never change per knock, grant or daemon reload",
		} {
			if !strings.Contains(sec, want) {
				t.Errorf("%s header lacks %q:\n%s", name, want, sec)
			}
		}
	}
	if !strings.Contains(v4, "--to-destination 192.0.2.10:22") || !strings.Contains(v6, "--to-destination [2001:db8:2::10]:22") {
		t.Errorf("DNAT missing:\n%s", out)
	}
}

// With --config and a policy that fails closed, the rules are those of
// --queue with the policy's queue number, byte for byte.
func TestRulesConfigFailClosed(t *testing.T) {
	cfg := writePolicyFile(t, "gate {\n  queue = 4\n}\n\ndoor \"ssh\" {\n  sequence = [\"tcp/7000\"]\n  open     = [\"tcp/22\"]\n}\n")
	_, want, _ := runMain(t, "rules", "--queue", "4", "--dnat", "tcp/2222=192.0.2.10:22")
	for _, args := range [][]string{
		{"rules", "--config", cfg, "--dnat", "tcp/2222=192.0.2.10:22"},
		{"rules", "--config", cfg, "--queue", "4", "--dnat", "tcp/2222=192.0.2.10:22"},
	} {
		code, out, errOut := runMain(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		if out != want {
			t.Errorf("%v printed\n%s\nwant the --queue 4 rules\n%s", args, out, want)
		}
	}
}

// --queue and --config may be given together only if they agree.
func TestRulesQueueDisagrees(t *testing.T) {
	cfg := writePolicyFile(t, failOpenPolicy)
	code, out, errOut := runMain(t, "rules", "--config", cfg, "--queue", "0")
	if code != 1 || out != "" || !strings.Contains(errOut, "--queue 0 disagrees with gate { queue = 5 }") {
		t.Errorf("exit %d, stdout %q, stderr %q; want exit 1 and the disagreement", code, out, errOut)
	}
	if code, _, errOut := runMain(t, "rules", "--config", cfg, "--queue", "5"); code != 0 {
		t.Errorf("agreeing --queue refused: exit %d: %s", code, errOut)
	}
}

// Several queues are spread with --queue-balance, from the flags or from
// the policy's gate { queues }.
func TestRulesQueueBalance(t *testing.T) {
	code, out, errOut := runMain(t, "rules", "--queue", "2", "--queues", "2")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if n := strings.Count(out, "-j NFQUEUE --queue-balance 2:3\n"); n != 4 || strings.Contains(out, "--queue-num") {
		t.Errorf("want tcp and udp queued with --queue-balance 2:3 for both families, got\n%s", out)
	}
	cfg := writePolicyFile(t, "gate {\n  queue = 4\n  queues = 3\n}\n")
	if code, out, errOut := runMain(t, "rules", "--config", cfg); code != 0 || !strings.Contains(out, "--queue-balance 4:6\n") {
		t.Errorf("exit %d, stderr %q; want --queue-balance 4:6 in\n%s", code, errOut, out)
	}
	if code, _, errOut := runMain(t, "rules", "--config", cfg, "--queues", "2"); code != 1 || !strings.Contains(errOut, "--queues 2 disagrees with gate { queues = 3 }") {
		t.Errorf("exit %d, stderr %q; want the disagreement", code, errOut)
	}
	for _, bad := range [][]string{{"--queues", "0"}, {"--queues", "65"}, {"--queue", "65535", "--queues", "2"}} {
		if code, _, errOut := runMain(t, append([]string{"rules"}, bad...)...); code != 1 || !strings.Contains(errOut, "invalid --queues") {
			t.Errorf("%v: exit %d, stderr %q; want invalid --queues", bad, code, errOut)
		}
	}
}

// An invalid policy is reported as validate reports it, and nothing is
// printed to stdout.
func TestRulesInvalidPolicy(t *testing.T) {
	cfg := writePolicyFile(t, "gate {\n  fail_open = \"yes please\"\n}\n")
	code, out, errOut := runMain(t, "rules", "--config", cfg)
	if code != 1 || out != "" || !strings.Contains(errOut, cfg+":2:") {
		t.Errorf("exit %d, stdout %q, stderr %q; want exit 1 and file:line:col", code, out, errOut)
	}
	if code, _, errOut := runMain(t, "rules", "--config", filepath.Join(t.TempDir(), "none.hcl")); code != 1 || !strings.Contains(errOut, "failed to read policy") {
		t.Errorf("missing policy: exit %d, stderr %q", code, errOut)
	}
}

// A fail-open policy without doors protects nothing: the rules bypass and
// drop nothing.
func TestRulesFailOpenNoDoors(t *testing.T) {
	cfg := writePolicyFile(t, "gate {\n  fail_open = true\n}\n")
	code, out, errOut := runMain(t, "rules", "--config", cfg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "--queue-bypass") || strings.Contains(out, "-j DROP") || strings.Contains(out, "-I INPUT") {
		t.Errorf("want bypass and no drop rules:\n%s", out)
	}
	if !strings.Contains(out, "none (the policy's doors open no port)") {
		t.Errorf("header does not say nothing is protected:\n%s", out)
	}
}

func TestPortRanges(t *testing.T) {
	tcp := func(n uint16) verdict.Port { return verdict.Port{Proto: verdict.TCP, Num: n} }
	udp := func(n uint16) verdict.Port { return verdict.Port{Proto: verdict.UDP, Num: n} }
	doors := []verdict.Door{
		{Open: []verdict.Port{tcp(65535), udp(1), tcp(22)}},
		{Open: []verdict.Port{tcp(23), tcp(22), udp(2), tcp(65534), tcp(80), udp(4)}},
	}
	var got []string
	for _, r := range portRanges(protectedPorts(doors)) {
		got = append(got, r.proto.String()+" "+r.String())
	}
	want := "tcp 22:23,tcp 80,tcp 65534:65535,udp 1:2,udp 4"
	if strings.Join(got, ",") != want {
		t.Errorf("ranges %v, want %s", got, want)
	}
	if r := portRanges(nil); r != nil {
		t.Errorf("no ports gave %v", r)
	}
}

// The example rules in contrib/iptables end with exactly what the binary
// prints (each section after its marker line), so they cannot rot:
// rules.v4 and .v6 with the defaults, rules.failopen.v4 and .v6 for the
// sample policy next to them.
func TestIptablesExamplesCurrent(t *testing.T) {
	t.Chdir("../..") // the paths in the files are from the top of the tree
	for _, tt := range []struct {
		args   []string
		v4, v6 string
	}{
		{nil, "contrib/iptables/rules.v4", "contrib/iptables/rules.v6"},
		{
			[]string{"--config", "contrib/iptables/failopen.hcl", "--interface", "wan0",
				"--dnat", "tcp/2222=192.0.2.10:22", "--dnat", "tcp/2222=[2001:db8:2::10]:22"},
			"contrib/iptables/rules.failopen.v4", "contrib/iptables/rules.failopen.v6",
		},
	} {
		code, out, errOut := runMain(t, append([]string{"rules"}, tt.args...)...)
		if code != 0 {
			t.Fatalf("rules %v: exit %d: %s", tt.args, code, errOut)
		}
		v4, v6, ok := strings.Cut(out, "# ---- ip6tables-restore --noflush ----\n")
		if !ok {
			t.Fatalf("no IPv6 section:\n%s", out)
		}
		_, v4, _ = strings.Cut(v4, "\n") // past the iptables marker
		for file, want := range map[string]string{tt.v4: v4, tt.v6: v6} {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(string(b), want) {
				t.Errorf("%s does not end with the rules knockgate rules %v prints now; regenerate it:\n%s",
					file, strings.Join(tt.args, " "), want)
			}
		}
	}
}
