package rules

import (
	"os"
	"strings"
	"testing"

	"github.com/knockgate/knockgate/verdict"
)

// The check compares with what iptables-save prints, captured from
// rulesets loaded in a network namespace (testdata/check).
func TestCheckIptables(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile("testdata/check/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tcp := func(n uint16) verdict.Port { return verdict.Port{Proto: verdict.TCP, Num: n} }
	failOpen := &FailOpen{Mark: DefaultAcceptMark, Mask: DefaultAcceptMask,
		Protected: []verdict.Port{tcp(22), tcp(443), {Proto: verdict.UDP, Num: 51820}}}
	ranges := &FailOpen{Mark: DefaultAcceptMark, Mask: DefaultAcceptMask, Protected: []verdict.Port{tcp(22), tcp(1000), tcp(1001), tcp(1002)}}
	for _, tt := range []struct {
		name    string
		spec    Steering
		v6      bool
		saved   string
		opt     CheckOptions
		missing []string
		stale   []string
	}{
		{name: "as loaded", spec: Steering{Interface: "eth0", Queue: 3, Queues: 2, FailOpen: failOpen}, saved: "failopen-eth0.v4"},
		{name: "fail-closed v6", spec: Steering{Queues: 1}, v6: true, saved: "failclosed.v6"},
		{name: "port ranges", spec: Steering{Queues: 1, FailOpen: ranges}, saved: "failopen-ranges.v4"},
		{name: "no rules", spec: Steering{Queues: 1}, saved: "none.v4",
			missing: []string{"-A PREROUTING ! -i lo", "-A KNOCKGATE -p tcp -j NFQUEUE --queue-num 0", "-A KNOCKGATE -p udp -j NFQUEUE --queue-num 0"}},
		{name: "other queue", spec: Steering{Interface: "eth0", Queue: 0, Queues: 1, FailOpen: failOpen}, saved: "failopen-eth0.v4",
			missing: []string{"-A KNOCKGATE -p tcp -j NFQUEUE --queue-num 0 --queue-bypass", "-A KNOCKGATE -p udp -j NFQUEUE --queue-num 0 --queue-bypass"},
			stale:   []string{"-A KNOCKGATE -p tcp -j NFQUEUE --queue-balance 3:4 --queue-bypass", "-A KNOCKGATE -p udp -j NFQUEUE --queue-balance 3:4 --queue-bypass"}},
		{name: "now fail-closed", spec: Steering{Interface: "eth0", Queue: 3, Queues: 2}, saved: "failopen-eth0.v4",
			missing: []string{"-A KNOCKGATE -p tcp -j NFQUEUE --queue-balance 3:4", "-A KNOCKGATE -p udp"},
			stale:   []string{"-A INPUT -i eth0", "-A FORWARD -i eth0", "--queue-bypass", "--queue-bypass", "--ctorigdstport 22 -j DROP", "--ctorigdstport 443 -j DROP", "--ctorigdstport 51820 -j DROP"}},
		{name: "port no longer protected", spec: Steering{Interface: "eth0", Queue: 3, Queues: 2,
			FailOpen: &FailOpen{Mark: DefaultAcceptMark, Mask: DefaultAcceptMask, Protected: []verdict.Port{tcp(22), tcp(443)}}},
			saved: "failopen-eth0.v4", stale: []string{"-A KNOCKGATE-PROTECTED -m conntrack --ctproto 17 --ctorigdstport 51820 -j DROP"}},
		{name: "other interface", spec: Steering{Interface: "wan", Queue: 3, Queues: 2, FailOpen: failOpen}, saved: "failopen-eth0.v4",
			missing: []string{"-i wan", "-i wan", "-i wan"}, stale: []string{"-i eth0", "-i eth0", "-i eth0"}},
		{name: "any interface", spec: Steering{Queue: 3, Queues: 2, FailOpen: failOpen}, saved: "failopen-eth0.v4", opt: CheckOptions{AnyInterface: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := tt.spec.CheckIptables(tt.v6, read(tt.saved), tt.opt)
			if err != nil {
				t.Fatal(err)
			}
			match := func(what string, got, want []string) {
				if len(got) != len(want) {
					t.Fatalf("%s %q, want %d like %q", what, got, len(want), want)
				}
				for i := range want {
					if !strings.Contains(got[i], want[i]) {
						t.Errorf("%s[%d] = %q, want it to contain %q", what, i, got[i], want[i])
					}
				}
			}
			match("missing", r.Missing, tt.missing)
			match("stale", r.Stale, tt.stale)
			if r.OK() != (len(tt.missing)+len(tt.stale) == 0) {
				t.Errorf("OK() = %v for %v", r.OK(), r)
			}
		})
	}
}
