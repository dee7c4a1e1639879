package rules

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/knockgate/knockgate/verdict"
)

// steerFailOpenPolicy is a fail-open policy, also the one
// cmd/knockgate's rules tests print through the command.
const steerFailOpenPolicy = "testdata/failopen.hcl"

// steerRules returns s.Rules() split into its IPv4 and IPv6 sections,
// failing the test on an error or a missing marker.
func steerRules(t *testing.T, s Steering) (v4, v6 string) {
	t.Helper()
	out, err := s.Rules()
	if err != nil {
		t.Fatal(err)
	}
	v4, ok := strings.CutPrefix(out, IPv4Marker)
	if !ok {
		t.Fatalf("no IPv4 marker first:\n%s", out)
	}
	v4, v6, ok = strings.Cut(v4, IPv6Marker)
	if !ok {
		t.Fatalf("no IPv6 section:\n%s", out)
	}
	for _, f := range []struct {
		v6   bool
		want string
	}{{false, v4}, {true, v6}} {
		if got, err := s.Iptables(f.v6); err != nil || got != f.want {
			t.Errorf("Iptables(%v) = %q, %v; want the section of Rules:\n%s", f.v6, got, err, f.want)
		}
	}
	return v4, v6
}

// failOpenFixture parses steerFailOpenPolicy under the name its header
// comment shows.
func failOpenFixture(t *testing.T) *Policy {
	t.Helper()
	src, err := os.ReadFile(steerFailOpenPolicy)
	if err != nil {
		t.Fatal(err)
	}
	return mustParse(t, string(src), "/etc/knockgate/policy.hcl")
}

func mustParse(t *testing.T, src, name string) *Policy {
	t.Helper()
	p, err := Parse([]byte(src), name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// In fail-open mode the rules queue with --queue-bypass and drop, in
// mangle INPUT and FORWARD, new connections to every protected port that
// lack the accept mark, for both families; the mark and the file named in
// the header come from the policy, the ports are folded into runs.
func TestSteeringFailOpen(t *testing.T) {
	pol := failOpenFixture(t)
	fo := NewFailOpen(pol)
	if fo == nil {
		t.Fatal("NewFailOpen gave nil for a fail-open policy")
	}
	v4, v6 := steerRules(t, Steering{
		Interface: "wan0", Queue: pol.Queue, Queues: pol.Queues, FailOpen: fo,
		DNATs: []DNAT{
			{tcp(2222), netip.MustParseAddrPort("192.0.2.10:22")},
			{tcp(2222), netip.MustParseAddrPort("[2001:db8:2::10]:22")},
		},
	})
	wantMangle := `*mangle
:KNOCKGATE - [0:0]
:KNOCKGATE-PROTECTED - [0:0]
-F PREROUTING
-F INPUT
-F FORWARD
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
			"FAIL-OPEN, for the policy /etc/knockgate/policy.hcl\n",
			"#   0x100/0x300\n",
			"Protected ports:\n#   tcp/22 tcp/23 tcp/2222 tcp/2223 tcp/2224 udp/51820\n",
			"These rules depend on the policy's protected ports",
			"knockgate rules --config /etc/knockgate/policy.hcl\n",
			"never change per knock, grant or daemon reload",
			"#   mangle PREROUTING, INPUT and FORWARD; nat PREROUTING\n",
		} {
			if !strings.Contains(sec, want) {
				t.Errorf("%s header lacks %q:\n%s", name, want, sec)
			}
		}
	}
	wantNAT4 := "*nat\n-F PREROUTING\n-A PREROUTING -i wan0 -m addrtype --dst-type LOCAL -p tcp --dport 2222 -j DNAT --to-destination 192.0.2.10:22\nCOMMIT\n"
	wantNAT6 := "*nat\n-F PREROUTING\n-A PREROUTING -i wan0 -m addrtype --dst-type LOCAL -p tcp --dport 2222 -j DNAT --to-destination [2001:db8:2::10]:22\nCOMMIT\n"
	if !strings.HasSuffix(v4, wantNAT4) || !strings.HasSuffix(v6, wantNAT6) {
		t.Errorf("each family should end with its own DNAT only:\n%s\n%s", v4, v6)
	}
}

// Without FailOpen the rules fail closed: no bypass, no protected chain,
// and each family's nat table is only suggested in a comment.
func TestSteeringFailClosed(t *testing.T) {
	pol := mustParse(t, "gate {\n  queue = 4\n}\n\ndoor \"ssh\" {\n  sequence = [\"tcp/7000\"]\n  open     = [\"tcp/22\"]\n}\n", "p.hcl")
	if fo := NewFailOpen(pol); fo != nil {
		t.Fatalf("NewFailOpen gave %+v for a fail-closed policy", fo)
	}
	v4, v6 := steerRules(t, Steering{Queue: pol.Queue, Queues: pol.Queues})
	want4 := `# knockgate steering rules: static, loaded once, never changed at run time.
# IPv4: load with ` + "`iptables-restore --noflush`" + ` (knockgate rules -6 prints
# the IPv6 rules, for ip6tables-restore). Loading again replaces them,
# never adds: iptables-restore cannot add a rule only if it is missing, so
# the rules empty their own chains and the base chains they jump from,
#   mangle PREROUTING
# which then hold knockgate's rules only: any other rule there is removed
# on every load. Keep your own rules out of those chains, or merge these
# lines, without the -F lines, into a whole-table file (iptables-
# persistent's). Without --noflush, iptables-restore replaces the tables
# below whole, with every rule of yours in them.
*mangle
:KNOCKGATE - [0:0]
-F PREROUTING
-A PREROUTING ! -i lo -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW -j KNOCKGATE
-A KNOCKGATE -p tcp -j NFQUEUE --queue-num 4
-A KNOCKGATE -p udp -j NFQUEUE --queue-num 4
COMMIT
# A door may open a gateway port that a static DNAT forwards to a LAN host;
# the gate sees the port before DNAT. Print one with --dnat, for example:
#   knockgate rules --dnat tcp/2222=192.0.2.10:22
`
	if v4 != want4 {
		t.Errorf("IPv4 rules\n%s\nwant\n%s", v4, want4)
	}
	want6 := strings.NewReplacer("192.0.2.10:22", "[2001:db8:2::10]:22",
		"IPv4: load with `iptables-restore", "IPv6: load with `ip6tables-restore",
		"rules -6 prints\n# the IPv6 rules, for ip6tables-restore", "rules -4 prints\n# the IPv4 rules, for iptables-restore",
		"--noflush, iptables-restore replaces", "--noflush, ip6tables-restore replaces").Replace(want4)
	if v6 != want6 {
		t.Errorf("IPv6 rules\n%s\nwant\n%s", v6, want6)
	}
}

// Several queues are spread with --queue-balance first:last.
func TestSteeringQueueBalance(t *testing.T) {
	out, err := Steering{Queue: 2, Queues: 2}.Rules()
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, "-j NFQUEUE --queue-balance 2:3\n"); n != 4 || strings.Contains(out, "--queue-num") {
		t.Errorf("want tcp and udp queued with --queue-balance 2:3 for both families, got\n%s", out)
	}
}

// A fail-open policy without doors protects nothing: the rules bypass and
// drop nothing, and the header says so.
func TestSteeringFailOpenNoDoors(t *testing.T) {
	pol := mustParse(t, "gate {\n  fail_open = true\n}\n", "p.hcl")
	out, err := Steering{Queue: pol.Queue, Queues: pol.Queues, FailOpen: NewFailOpen(pol)}.Rules()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "--queue-bypass") || strings.Contains(out, "-j DROP") || strings.Contains(out, "-I INPUT") {
		t.Errorf("want bypass and no drop rules:\n%s", out)
	}
	if !strings.Contains(out, "none (the policy's doors open no port)") {
		t.Errorf("header does not say nothing is protected:\n%s", out)
	}
}

// Protected ports given out of order and repeated give the same rules as
// sorted, unique ones, and the caller's slice is left alone.
func TestSteeringSortsProtected(t *testing.T) {
	mixed := []verdict.Port{udp(53), tcp(23), tcp(22), udp(53), tcp(22)}
	s := Steering{Queues: 1, FailOpen: &FailOpen{Policy: "p.hcl", Mark: 1, Mask: 1, Protected: mixed}}
	got, err := s.Rules()
	if err != nil {
		t.Fatal(err)
	}
	s.FailOpen = &FailOpen{Policy: "p.hcl", Mark: 1, Mask: 1, Protected: []verdict.Port{tcp(22), tcp(23), udp(53)}}
	want, err := s.Rules()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("unsorted ports gave\n%s\nwant\n%s", got, want)
	}
	if mixed[0] != udp(53) || len(mixed) != 5 {
		t.Errorf("Rules changed the caller's ports: %v", mixed)
	}
}

// Fields that would give wrong rules, or let text escape its rule, are
// refused.
func TestSteeringRefuses(t *testing.T) {
	fo := func(f func(*FailOpen)) *FailOpen {
		o := &FailOpen{Policy: "p.hcl", Mark: 0x100, Mask: 0x300, Protected: []verdict.Port{tcp(22)}}
		f(o)
		return o
	}
	for name, s := range map[string]Steering{
		"interface":         {Interface: "eth0 -j ACCEPT", Queues: 1},
		"long interface":    {Interface: "abcdefghijklmnop", Queues: 1},
		"no queues":         {Queues: 0},
		"too many queues":   {Queues: MaxQueues + 1},
		"queues past 65535": {Queue: 65535, Queues: 2},
		"dnat destination":  {Queues: 1, DNATs: []DNAT{{Port: tcp(22)}}},
		"dnat port":         {Queues: 1, DNATs: []DNAT{{Port: verdict.Port{Proto: 1, Num: 22}, To: netip.MustParseAddrPort("192.0.2.1:22")}}},
		"zero mark":         {Queues: 1, FailOpen: fo(func(o *FailOpen) { o.Mark = 0 })},
		"mark past mask":    {Queues: 1, FailOpen: fo(func(o *FailOpen) { o.Mark = 0x400 })},
		"policy newline":    {Queues: 1, FailOpen: fo(func(o *FailOpen) { o.Policy = "p.hcl\n*filter" })},
		"protected port 0":  {Queues: 1, FailOpen: fo(func(o *FailOpen) { o.Protected = []verdict.Port{tcp(0)} })},
	} {
		out, err := s.Rules()
		nft, nftErr := s.Nftables()
		v6, v6Err := s.Iptables(true)
		if err == nil || out != "" || nftErr == nil || nft != "" || v6Err == nil || v6 != "" {
			t.Errorf("%s: got %q, %v; %q, %v; %q, %v; want errors and no rules", name, out, err, nft, nftErr, v6, v6Err)
		} else if msg := err.Error(); msg != strings.ToLower(msg[:1])+msg[1:] {
			t.Errorf("%s: error %q is not lowercase", name, msg)
		}
	}
}

func TestValidInterface(t *testing.T) {
	for name, want := range map[string]bool{
		"": true, "eth0": true, "wan.100": true, "br-lan": true, "wg_0@x+y": true,
		"abcdefghijklmno": true, "abcdefghijklmnop": false,
		"eth0;x": false, "eth 0": false, "eth0\n": false, "é": false,
	} {
		if got := ValidInterface(name); got != want {
			t.Errorf("ValidInterface(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestPortRuns(t *testing.T) {
	doors := []verdict.Door{
		{Open: []verdict.Port{tcp(65535), udp(1), tcp(22)}},
		{Open: []verdict.Port{tcp(23), tcp(22), udp(2), tcp(65534), tcp(80), udp(4)}},
	}
	var got []string
	for _, r := range portRuns(protectedPorts(doors)) {
		got = append(got, r.proto.String()+" "+r.String())
	}
	want := "tcp 22:23,tcp 80,tcp 65534:65535,udp 1:2,udp 4"
	if strings.Join(got, ",") != want {
		t.Errorf("runs %v, want %s", got, want)
	}
	if r := portRuns(nil); r != nil {
		t.Errorf("no ports gave %v", r)
	}
}

func TestQueueRange(t *testing.T) {
	for _, tc := range []struct {
		first  uint16
		queues int
		want   string
	}{{0, 1, "0"}, {0, 0, "0"}, {7, 1, "7"}, {2, 2, "2:3"}, {65472, 64, "65472:65535"}} {
		if got := QueueRange(tc.first, tc.queues); got != tc.want {
			t.Errorf("QueueRange(%d, %d) = %q, want %q", tc.first, tc.queues, got, tc.want)
		}
	}
}
