//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/knockgate/knockgate/internal/netns"
)

// steeringCases are the `knockgate rules` arguments the steering tests
// load: fail-closed rules balanced over two queues, and a fail-open policy with an
// interface and a DNAT for each family, which adds jumps in mangle INPUT
// and FORWARD and rules in nat PREROUTING.
var steeringCases = []struct {
	name string
	args []string
}{
	{"fail-closed", []string{"--queue", "2", "--queues", "2"}},
	{"fail-open", []string{"--config", "../contrib/iptables/failopen.hcl", "--interface", "wan0",
		"--dnat", "tcp/2222=192.0.2.10:22", "--dnat", "tcp/2222=[2001:db8:2::10]:22"}},
}

// freshNS makes an empty network namespace for one test and removes it
// when the test ends, also when it fails.
func freshNS(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("kgs%d-%s", os.Getpid()%100000, strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()))
	if len(name) > 60 {
		name = name[:60]
	}
	netns.Remove(name)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if err := netns.Remove(name); err != nil {
			t.Error(err)
		}
	})
	return name
}

// inNSCmd runs a command inside ns with stdin, returning its output.
func inNSCmd(ns, stdin, name string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// savedRules returns iptables-save's rules and chain declarations, without
// its comments and packet counters, so two saves compare.
func savedRules(t *testing.T, ns, save string) string {
	t.Helper()
	out, err := inNSCmd(ns, "", save)
	if err != nil {
		t.Fatalf("%s: %v\n%s", save, err, out)
	}
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			keep = append(keep, regexp.MustCompile(` \[\d+:\d+\]$`).ReplaceAllString(line, ""))
		}
	}
	return strings.Join(keep, "\n")
}

// Loading `knockgate rules -4` (or -6) twice, with --noflush, without it,
// or once each way, leaves exactly one jump per hook and the same rules as
// loading it once, and --noflush leaves rules outside the chains the
// output owns alone. Before the output flushed the base chains it jumps
// from, the second --noflush load doubled every jump.
func TestSteeringRulesLoadTwice(t *testing.T) {
	for _, tc := range steeringCases {
		for _, fam := range []struct{ flag, restore, save, dnat string }{
			{"-4", "iptables-restore", "iptables-save", "--to-destination 192.0.2.10:22"},
			{"-6", "ip6tables-restore", "ip6tables-save", "--to-destination [2001:db8:2::10]:22"},
		} {
			out, err := exec.Command(binPath, append([]string{"rules", fam.flag}, tc.args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("knockgate rules %s %v: %v\n%s", fam.flag, tc.args, err, out)
			}
			rules := string(out)
			for _, mode := range []struct {
				name          string
				first, second []string
			}{
				{"noflush", []string{"--noflush"}, []string{"--noflush"}},
				{"full", nil, nil},
				{"noflush-then-full", []string{"--noflush"}, nil},
			} {
				t.Run(tc.name+fam.flag+"-"+mode.name, func(t *testing.T) {
					ns := freshNS(t)
					tool := strings.TrimSuffix(fam.restore, "-restore")
					// Rules of the operator's own, in a table and a chain
					// the output does not own.
					for _, r := range [][]string{
						{"-A", "INPUT", "-p", "tcp", "--dport", "80", "-j", "ACCEPT"},
						{"-t", "mangle", "-A", "POSTROUTING", "-p", "tcp", "--dport", "80", "-j", "ACCEPT"},
					} {
						if out, err := inNSCmd(ns, "", tool, r...); err != nil {
							t.Fatalf("%s %v: %v\n%s", tool, r, err, out)
						}
					}
					var once string
					for i, flags := range [][]string{mode.first, mode.second} {
						if out, err := inNSCmd(ns, rules, fam.restore, flags...); err != nil {
							t.Fatalf("load %d, %s %v: %v\n%s", i+1, fam.restore, flags, err, out)
						}
						if i == 0 {
							once = savedRules(t, ns, fam.save)
						}
					}
					twice := savedRules(t, ns, fam.save)
					// A full restore after a --noflush one also drops the
					// operator's mangle rule, which the first kept.
					if mode.name != "noflush-then-full" && twice != once {
						t.Errorf("a second load changed the rules; after one:\n%s\nafter two:\n%s", once, twice)
					}
					count := func(re string) int { return len(regexp.MustCompile(`(?m)`+re).FindAllString(twice, -1)) }
					want := map[string]int{
						`^-A PREROUTING .*-j KNOCKGATE$`:                       1,
						`^-A INPUT .*-j KNOCKGATE-PROTECTED$`:                  0,
						`^-A FORWARD .*-j KNOCKGATE-PROTECTED$`:                0,
						`^-A PREROUTING .*` + regexp.QuoteMeta(fam.dnat) + `$`: 0,
						`^-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT$`:        1,
					}
					if tc.name == "fail-open" {
						want[`^-A INPUT .*-j KNOCKGATE-PROTECTED$`] = 1
						want[`^-A FORWARD .*-j KNOCKGATE-PROTECTED$`] = 1
						want[`^-A PREROUTING .*`+regexp.QuoteMeta(fam.dnat)+`$`] = 1
					}
					if mode.second != nil { // the last load kept the rest of mangle
						want[`^-A POSTROUTING -p tcp -m tcp --dport 80 -j ACCEPT$`] = 1
					}
					for re, n := range want {
						if got := count(re); got != n {
							t.Errorf("%d lines match %s, want %d:\n%s", got, re, n, twice)
						}
					}
				})
			}
		}
	}
}

// nftQueueRefused matches the error nft gives, for a rule with a queue
// statement, on a kernel without nft_queue: the message, the rule and a
// caret line whose marks sit under the word queue.
var nftQueueRefused = regexp.MustCompile(`(?m)^.*: Error: Could not process rule: No such file or directory\n(.*)\n([ \t]*)(\^+)\n`)

// nftCheck runs nft -c on ruleset inside ns. It returns nil when nft
// accepts it, errQueueRefused when every error nft gives is the kernel's
// refusal of the queue statement, and nft's output otherwise.
func nftCheck(t *testing.T, ns, ruleset string) error {
	t.Helper()
	file := filepath.Join(t.TempDir(), "rules.nft")
	if err := os.WriteFile(file, []byte(ruleset), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := inNSCmd(ns, "", "nft", "-c", "-f", file)
	if err == nil {
		return nil
	}
	rest := out
	refused := 0
	for _, m := range nftQueueRefused.FindAllStringSubmatch(out, -1) {
		line, pad, carets := m[1], len(m[2]), len(m[3])
		if pad+carets > len(line) || line[pad:pad+carets] != "queue" {
			return fmt.Errorf("nft -c refused something else than queue: %v\n%s", err, out)
		}
		rest = strings.Replace(rest, m[0], "", 1)
		refused++
	}
	if refused == 0 || strings.TrimSpace(rest) != "" {
		return fmt.Errorf("nft -c: %v\n%s", err, out)
	}
	return errQueueRefused
}

var errQueueRefused = fmt.Errorf("the kernel refuses nft's queue statement (no nft_queue)")

// queueStmt is the queue statement of the prerouting chain.
var queueStmt = regexp.MustCompile(`queue num [0-9-]+( bypass)?`)

// `knockgate rules --format nft` is a ruleset nft accepts. On a kernel
// without nft_queue, nft -c refuses the queue statement; then the same
// ruleset with the statement replaced by accept must pass nft -c and load
// twice to one table, and the test is skipped for the queue statement
// alone. A ruleset broken on purpose must fail the check, so a syntax
// error can never pass for the kernel's refusal.
func TestSteeringNftCheck(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("the nft check needs nft (apt-get install nftables, see .ci/run): %v", err)
	}
	cases := append(steeringCases, struct {
		name string
		args []string
	}{"fail-open-nodnat", []string{"--config", "../contrib/iptables/failopen.hcl"}})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(binPath, append([]string{"rules", "--format", "nft"}, tc.args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("knockgate rules --format nft %v: %v\n%s", tc.args, err, out)
			}
			ruleset := string(out)
			ns := freshNS(t)
			broken := strings.Replace(ruleset, "ct state new", "ct stat new", 1)
			if err := nftCheck(t, ns, broken); err == nil || err == errQueueRefused {
				t.Fatalf("a ruleset with a syntax error passed the check (%v)", err)
			}
			err = nftCheck(t, ns, ruleset)
			if err == nil {
				return
			}
			if err != errQueueRefused {
				t.Fatal(err)
			}
			if !queueStmt.MatchString(ruleset) {
				t.Fatalf("no queue statement in\n%s", ruleset)
			}
			noQueue := queueStmt.ReplaceAllString(ruleset, "accept")
			if err := nftCheck(t, ns, noQueue); err != nil {
				t.Fatalf("without its queue statement: %v", err)
			}
			file := filepath.Join(t.TempDir(), "noqueue.nft")
			if err := os.WriteFile(file, []byte(noQueue), 0o600); err != nil {
				t.Fatal(err)
			}
			var lists [2]string
			for i := range lists {
				if out, err := inNSCmd(ns, "", "nft", "-f", file); err != nil {
					t.Fatalf("load %d: %v\n%s", i+1, err, out)
				}
				lists[i], err = inNSCmd(ns, "", "nft", "list", "ruleset")
				if err != nil {
					t.Fatal(err)
				}
			}
			if lists[0] != lists[1] || strings.Count(lists[1], "table inet knockgate") != 1 || strings.Count(lists[1], "hook prerouting priority mangle") != 1 {
				t.Errorf("loading twice gave\n%s\nafter once\n%s", lists[1], lists[0])
			}
			t.Skipf("%v; the rest of the ruleset passes nft -c and loads twice to one table", errQueueRefused)
		})
	}
}
