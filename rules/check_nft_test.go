package rules

import (
	"os"
	"strings"
	"testing"

	"github.com/knockgate/knockgate/verdict"
)

// testdata/check/failopen-eth0.json is `nft -j list ruleset` of the rules
// Nftables prints for a fail-open policy on eth0, queues 3-4, loaded in a
// network namespace. This kernel has no nft queue expression, so the
// queue statement was loaded as accept and written back by hand in the
// form libnftables-json(5) documents: {"queue": {"num": ..., "flags": ...}}.
func TestCheckNft(t *testing.T) {
	listing, err := os.ReadFile("testdata/check/failopen-eth0.json")
	if err != nil {
		t.Fatal(err)
	}
	tcp := func(n uint16) verdict.Port { return verdict.Port{Proto: verdict.TCP, Num: n} }
	fo := func(ports ...verdict.Port) *FailOpen {
		return &FailOpen{Mark: DefaultAcceptMark, Mask: DefaultAcceptMask, Protected: ports}
	}
	all := fo(tcp(22), tcp(443), verdict.Port{Proto: verdict.UDP, Num: 51820})
	for _, tt := range []struct {
		name           string
		spec           Steering
		opt            CheckOptions
		missing, stale []string
	}{
		{name: "as loaded", spec: Steering{Interface: "eth0", Queue: 3, Queues: 2, FailOpen: all}},
		{name: "other queue", spec: Steering{Interface: "eth0", Queue: 0, Queues: 1, FailOpen: all},
			missing: []string{"queue 0 bypass"}, stale: []string{"queue 3-4 bypass"}},
		{name: "fail-closed", spec: Steering{Interface: "eth0", Queue: 3, Queues: 2},
			missing: []string{"queue 3-4"}, stale: []string{"accept mark 0x4b470000/0xffff0000", "protected tcp 22,443", "protected udp 51820", "queue 3-4 bypass"}},
		{name: "fewer ports", spec: Steering{Interface: "eth0", Queue: 3, Queues: 2, FailOpen: fo(tcp(22), tcp(443))},
			stale: []string{"protected udp 51820"}},
		{name: "other interface", spec: Steering{Queue: 3, Queues: 2, FailOpen: all},
			missing: []string{"interface != lo"}, stale: []string{"interface == eth0"}},
		{name: "any interface", spec: Steering{Queue: 3, Queues: 2, FailOpen: all}, opt: CheckOptions{AnyInterface: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := tt.spec.CheckNft(listing, tt.opt)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(r.Missing, "|") != strings.Join(tt.missing, "|") || strings.Join(r.Stale, "|") != strings.Join(tt.stale, "|") {
				t.Fatalf("missing %q, stale %q; want %q, %q", r.Missing, r.Stale, tt.missing, tt.stale)
			}
		})
	}
	// No table at all: everything is missing.
	r, err := Steering{Queues: 1}.CheckNft([]byte(`{"nftables": [{"metainfo": {"version": "1.0.6"}}]}`), CheckOptions{})
	if err != nil || len(r.Missing) != 3 || r.Missing[0] != "table inet knockgate" {
		t.Fatalf("empty ruleset: %v, %v", r, err)
	}
}
