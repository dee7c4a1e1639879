package rules

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/knockgate/knockgate/verdict"
)

// The nftables ruleset carries what the iptables rules carry, in one inet
// table that a second load replaces: the interface, the queue with
// bypass, the accept mark, the protected ports as one interval set per
// protocol (folded into runs), and each DNAT with its own family.
func TestSteeringNftablesFailOpen(t *testing.T) {
	pol := failOpenFixture(t)
	got, err := Steering{
		Interface: "wan0", Queue: pol.Queue, Queues: pol.Queues, FailOpen: NewFailOpen(pol),
		DNATs: []DNAT{
			{tcp(2222), netip.MustParseAddrPort("192.0.2.10:22")},
			{tcp(2222), netip.MustParseAddrPort("[2001:db8:2::10]:22")},
		},
	}.Nftables()
	if err != nil {
		t.Fatal(err)
	}
	want := `table inet knockgate
delete table inet knockgate
table inet knockgate {
	set protected_tcp {
		type inet_service
		flags interval
		elements = { 22-23, 2222-2224 }
	}

	set protected_udp {
		type inet_service
		flags interval
		elements = { 51820 }
	}

	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		iifname "wan0" fib daddr type local ct state new meta l4proto { tcp, udp } counter queue num 5 bypass
	}

	chain input {
		type filter hook input priority mangle; policy accept;
		iifname "wan0" ct state new meta mark & 0x300 != 0x100 jump protected
	}

	chain forward {
		type filter hook forward priority mangle; policy accept;
		iifname "wan0" ct state new ct status dnat meta mark & 0x300 != 0x100 jump protected
	}

	chain protected {
		meta l4proto tcp ct original proto-dst @protected_tcp counter drop
		meta l4proto udp ct original proto-dst @protected_udp counter drop
	}

	chain dstnat {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "wan0" fib daddr type local tcp dport 2222 dnat ip to 192.0.2.10:22
		iifname "wan0" fib daddr type local tcp dport 2222 dnat ip6 to [2001:db8:2::10]:22
	}
}
`
	if !strings.HasPrefix(got, "#!/usr/sbin/nft -f\n") || !strings.HasSuffix(got, "\n"+want) {
		t.Errorf("got\n%s\nwant it to end with\n%s", got, want)
	}
	for _, frag := range []string{
		"# FAIL-OPEN, for the policy /etc/knockgate/policy.hcl\n",
		"#   0x100/0x300\n",
		"#   tcp/22 tcp/23 tcp/2222 tcp/2223 tcp/2224 udp/51820\n",
		"#   knockgate rules --format nft --config /etc/knockgate/policy.hcl\n",
	} {
		if !strings.Contains(got, frag) {
			t.Errorf("header lacks %q:\n%s", frag, got)
		}
	}
}

// Fail-closed, the ruleset queues without bypass from every interface but
// lo, over a range of queues when there are several, and has neither
// protect chains nor a nat chain.
func TestSteeringNftablesFailClosed(t *testing.T) {
	got, err := Steering{Queue: 2, Queues: 2}.Nftables()
	if err != nil {
		t.Fatal(err)
	}
	rule := "\t\tiifname != \"lo\" fib daddr type local ct state new meta l4proto { tcp, udp } counter queue num 2-3\n\t}\n"
	if !strings.Contains(got, rule) {
		t.Errorf("no fail-closed balanced queue rule\n%s\nin\n%s", rule, got)
	}
	for _, absent := range []string{"bypass\n", "set protected", "hook input", "hook forward", "type nat", "FAIL-OPEN"} {
		if strings.Contains(got, absent) {
			t.Errorf("fail-closed ruleset has %q:\n%s", absent, got)
		}
	}
	if !strings.Contains(got, "# FAIL-CLOSED: no bypass, so while no daemon reads queue 2:3") {
		t.Errorf("header does not say it fails closed:\n%s", got)
	}
}

// A fail-open policy that protects only TCP ports gets no UDP set, and
// one that protects nothing gets bypass but no protect chains: an empty
// set would be a syntax error to nft.
func TestSteeringNftablesProtectedSets(t *testing.T) {
	s := Steering{Queues: 1, FailOpen: &FailOpen{Policy: "p.hcl", Mark: 1, Mask: 1, Protected: []verdict.Port{tcp(22)}}}
	got, err := s.Nftables()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "elements = { 22 }") || strings.Contains(got, "protected_udp") {
		t.Errorf("want a TCP set only:\n%s", got)
	}
	s.FailOpen.Protected = nil
	if got, err = s.Nftables(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "queue num 0 bypass\n") || strings.Contains(got, "set ") || strings.Contains(got, "jump protected") {
		t.Errorf("want bypass and no protect chains:\n%s", got)
	}
}
