package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/knockgate/knockgate/rules"
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

// failOpenPolicy is the fail-open policy of package rules' steering tests.
const failOpenPolicy = "../../rules/testdata/failopen.hcl"

// failOpenSteering is what rules should print for the policy in cfg with
// --interface wan0 and a DNAT of tcp/2222 for each family.
func failOpenSteering(t *testing.T, cfg string) rules.Steering {
	t.Helper()
	pol, err := rules.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rules.Steering{
		Interface: "wan0", Queue: pol.Queue, Queues: pol.Queues, FailOpen: rules.NewFailOpen(pol),
		DNATs: []rules.DNAT{
			{Port: verdict.Port{Proto: verdict.TCP, Num: 2222}, To: netip.MustParseAddrPort("192.0.2.10:22")},
			{Port: verdict.Port{Proto: verdict.TCP, Num: 2222}, To: netip.MustParseAddrPort("[2001:db8:2::10]:22")},
		},
	}
}

// With a fail-open policy, rules prints what rules.Steering renders from
// its flags and the policy: the interface, the DNATs, the policy's queue,
// and the fail-open part (mark, protected ports, the --config path in the
// header). The rules themselves are tested in package rules.
func TestRulesFailOpen(t *testing.T) {
	cfg := failOpenPolicy
	code, out, errOut := runMain(t, "rules", "--config", cfg, "--interface", "wan0",
		"--dnat", "tcp/2222=192.0.2.10:22", "--dnat", "tcp/2222=[2001:db8:2::10]:22")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want, err := failOpenSteering(t, cfg).Rules()
	if err != nil {
		t.Fatal(err)
	}
	if out != want {
		t.Errorf("printed\n%s\nwant\n%s", out, want)
	}
	for _, frag := range []string{
		"FAIL-OPEN, for the policy " + cfg + "\n",
		"knockgate rules --config " + cfg + "\n",
		"-A KNOCKGATE -p udp -j NFQUEUE --queue-num 5 --queue-bypass\n",
		"-F PREROUTING\n-F INPUT\n-F FORWARD\n",
		"-I INPUT -i wan0 -m conntrack --ctstate NEW -m mark ! --mark 0x100/0x300 -j KNOCKGATE-PROTECTED\n",
	} {
		if strings.Count(out, frag) != 2 {
			t.Errorf("want %q in both families:\n%s", frag, out)
		}
	}
}

// --interface is refused, naming the flag, unless it is an interface name.
func TestRulesInterface(t *testing.T) {
	for arg, want := range map[string]string{
		"eth0;x":           `invalid --interface "eth0;x"` + "\n",
		"abcdefghijklmnop": `invalid --interface "abcdefghijklmnop": longer than 15 characters` + "\n",
	} {
		if code, out, errOut := runMain(t, "rules", "--interface", arg); code != 1 || out != "" || !strings.HasSuffix(errOut, want) {
			t.Errorf("--interface %q: exit %d, stdout %q, stderr %q; want exit 1 and %q", arg, code, out, errOut, want)
		}
	}
	if code, out, errOut := runMain(t, "rules", "--interface", "wan.100"); code != 0 || !strings.Contains(out, "-i wan.100 ") {
		t.Errorf("--interface wan.100: exit %d, stderr %q:\n%s", code, errOut, out)
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
	cfg := failOpenPolicy
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

// -4 and -6 print one family's section of the full output, without its
// marker, ready for iptables-restore or ip6tables-restore; --format nft
// prints rules.Steering's nftables ruleset. Flags that cannot go together
// are usage errors.
func TestRulesFamiliesAndFormat(t *testing.T) {
	cfg := failOpenPolicy
	args := []string{"--config", cfg, "--interface", "wan0", "--dnat", "tcp/2222=192.0.2.10:22", "--dnat", "tcp/2222=[2001:db8:2::10]:22"}
	run := func(extra ...string) string {
		t.Helper()
		code, out, errOut := runMain(t, append(append([]string{"rules"}, extra...), args...)...)
		if code != 0 {
			t.Fatalf("rules %v: exit %d: %s", extra, code, errOut)
		}
		return out
	}
	both := run()
	v4, v6, ok := strings.Cut(strings.TrimPrefix(both, rules.IPv4Marker), rules.IPv6Marker)
	if !ok || !strings.HasPrefix(both, rules.IPv4Marker) {
		t.Fatalf("no marked sections:\n%s", both)
	}
	if got := run("-4"); got != v4 || !strings.Contains(got, "# IPv4: load with `iptables-restore --noflush`") {
		t.Errorf("-4 printed\n%s\nwant the IPv4 section\n%s", got, v4)
	}
	if got := run("-6"); got != v6 || !strings.Contains(got, "# IPv6: load with `ip6tables-restore --noflush`") {
		t.Errorf("-6 printed\n%s\nwant the IPv6 section\n%s", got, v6)
	}
	want, err := failOpenSteering(t, cfg).Nftables()
	if err != nil {
		t.Fatal(err)
	}
	if got := run("--format", "nft"); got != want {
		t.Errorf("--format nft printed\n%s\nwant\n%s", got, want)
	}
	if got := run("--format", "iptables"); got != both {
		t.Errorf("--format iptables printed\n%s\nwant\n%s", got, both)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"-4", "-6"}, "-4 and -6 exclude each other"},
		{[]string{"--format", "nft", "-4"}, "--format nft prints one inet table for both families"},
		{[]string{"--format", "pf"}, `invalid --format "pf": want iptables or nft`},
	} {
		if code, out, errOut := runMain(t, append([]string{"rules"}, bad.args...)...); code != 2 || out != "" || !strings.Contains(errOut, bad.want) {
			t.Errorf("rules %v: exit %d, stdout %q, stderr %q; want exit 2 and %q", bad.args, code, out, errOut, bad.want)
		}
	}
}

// The example rules in contrib/iptables and contrib/nftables end with
// exactly what the binary prints (each iptables file with its family's
// section, from -4 or -6), so they cannot rot: rules.v4 and .v6 and
// knockgate.nft with the defaults, rules.failopen.v4 and .v6 for the
// sample policy next to them.
func TestRulesExamplesCurrent(t *testing.T) {
	t.Chdir("../..") // the paths in the files are from the top of the tree
	failOpen := []string{"--config", "contrib/iptables/failopen.hcl", "--interface", "wan0",
		"--dnat", "tcp/2222=192.0.2.10:22", "--dnat", "tcp/2222=[2001:db8:2::10]:22"}
	for _, tt := range []struct {
		file string
		args []string
	}{
		{"contrib/iptables/rules.v4", []string{"-4"}},
		{"contrib/iptables/rules.v6", []string{"-6"}},
		{"contrib/iptables/rules.failopen.v4", append([]string{"-4"}, failOpen...)},
		{"contrib/iptables/rules.failopen.v6", append([]string{"-6"}, failOpen...)},
		{"contrib/nftables/knockgate.nft", []string{"--format", "nft"}},
	} {
		code, want, errOut := runMain(t, append([]string{"rules"}, tt.args...)...)
		if code != 0 {
			t.Fatalf("rules %v: exit %d: %s", tt.args, code, errOut)
		}
		want = strings.TrimPrefix(want, "#!/usr/sbin/nft -f\n") // the file's own first line
		b, err := os.ReadFile(tt.file)
		if err != nil {
			t.Fatal(err)
		}
		if tt.file == "contrib/nftables/knockgate.nft" {
			// firewall4's snippet cannot hold a table, only the chain: its
			// queue rule must be the one printed.
			rule := regexp.MustCompile(`(?m)^\t\t(.* queue num .*)$`).FindStringSubmatch(want)
			fw4, err := os.ReadFile("contrib/nftables/knockgate-fw4.nft")
			if err != nil {
				t.Fatal(err)
			}
			if rule == nil || !strings.Contains(string(fw4), "\n\t"+rule[1]+" comment ") {
				t.Errorf("contrib/nftables/knockgate-fw4.nft lacks the queue rule knockgate rules --format nft prints: %q", rule)
			}
		}
		if !strings.HasSuffix(string(b), want) {
			t.Errorf("%s does not end with the rules knockgate rules %v prints now; regenerate it:\n%s",
				tt.file, strings.Join(tt.args, " "), want)
		}
	}
}
