package rules

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/knockgate/knockgate/verdict"
)

// NftTable is the nftables table, of family inet, that Nftables fills.
const NftTable = "knockgate"

// nftProtos are the protocols of the protected sets, in the order printed.
var nftProtos = []verdict.Proto{verdict.TCP, verdict.UDP}

// Nftables returns the steering rules as an nftables ruleset for
// `nft -f`: one inet table, NftTable, for IPv4 and IPv6, with the same
// queues, fail-open marks, protected ports, interface and DNATs that
// Iptables gives each family. Loading it again replaces the table whole in
// one transaction, so it is idempotent and never leaves a moment without
// the queue rule. It refuses what Iptables refuses.
func (s Steering) Nftables() (string, error) {
	s, err := s.prepared()
	if err != nil {
		return "", err
	}
	in := `iifname != "lo"`
	if s.Interface != "" {
		in = "iifname " + strconv.Quote(s.Interface) // ValidInterface leaves nothing to escape
	}
	// nft spreads a queue range by a hash of the address pair, as
	// iptables' --queue-balance does.
	queue := "queue num " + strings.Replace(QueueRange(s.Queue, s.Queues), ":", "-", 1)
	fo := s.FailOpen
	var b strings.Builder
	b.WriteString("#!/usr/sbin/nft -f\n")
	b.WriteString("# knockgate steering rules for nftables: static, loaded once, never changed at\n")
	b.WriteString("# run time. One inet table for IPv4 and IPv6. Load with `nft -f FILE`; check\n")
	b.WriteString("# first with `nft -c -f FILE`. Loading again replaces the table whole, in one\n")
	b.WriteString("# transaction (the first two lines make sure it exists, then delete it).\n")
	b.WriteString("# Use these rules or knockgate's iptables rules, never both.\n")
	b.WriteString("# The queue statement needs the kernel's nft_queue module (CONFIG_NFT_QUEUE;\n")
	b.WriteString("# OpenWrt: kmod-nft-queue); without it nft refuses the whole file with\n")
	b.WriteString("#   Error: Could not process rule: No such file or directory\n")
	b.WriteString("# pointing at `queue`.\n")
	if fo == nil {
		fmt.Fprintf(&b, "# FAIL-CLOSED: no bypass, so while no daemon reads queue %s the kernel drops\n", QueueRange(s.Queue, s.Queues))
		b.WriteString("# every packet the prerouting chain queues.\n")
	} else {
		queue += " bypass"
		writeNftFailOpenHeader(&b, fo)
	}
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\ntable inet %s {\n", NftTable, NftTable, NftTable)
	protected := fo != nil && len(fo.Protected) > 0
	// One set per protocol: nft 1.0 cannot concatenate ct original
	// protocol with ct original proto-dst.
	elems := map[verdict.Proto][]string{}
	if protected {
		for _, r := range portRuns(fo.Protected) {
			elems[r.proto] = append(elems[r.proto], strings.Replace(r.String(), ":", "-", 1))
		}
	}
	for _, proto := range nftProtos {
		if len(elems[proto]) > 0 {
			fmt.Fprintf(&b, "\tset protected_%s {\n\t\ttype inet_service\n\t\tflags interval\n\t\telements = { %s }\n\t}\n\n", proto, strings.Join(elems[proto], ", "))
		}
	}
	// Priority mangle (-150), as iptables' mangle PREROUTING: after
	// conntrack (-200), so ct state is known, and before DNAT (dstnat,
	// -100), so the daemon sees the port the client dialled.
	b.WriteString("\tchain prerouting {\n\t\ttype filter hook prerouting priority mangle; policy accept;\n")
	fmt.Fprintf(&b, "\t\t%s fib daddr type local ct state new meta l4proto { tcp, udp } counter %s\n\t}\n", in, queue)
	if protected {
		mark := fmt.Sprintf("meta mark & %#x != %#x", fo.Mask, fo.Mark)
		fmt.Fprintf(&b, "\n\tchain input {\n\t\ttype filter hook input priority mangle; policy accept;\n\t\t%s ct state new %s jump protected\n\t}\n", in, mark)
		fmt.Fprintf(&b, "\n\tchain forward {\n\t\ttype filter hook forward priority mangle; policy accept;\n\t\t%s ct state new ct status dnat %s jump protected\n\t}\n", in, mark)
		b.WriteString("\n\tchain protected {\n")
		for _, proto := range nftProtos {
			if len(elems[proto]) > 0 {
				fmt.Fprintf(&b, "\t\tmeta l4proto %s ct original proto-dst @protected_%s counter drop\n", proto, proto)
			}
		}
		b.WriteString("\t}\n")
	}
	if len(s.DNATs) == 0 {
		b.WriteString("\n\t# A door may open a gateway port that a static DNAT forwards to a LAN\n")
		b.WriteString("\t# host; the gate sees the port before DNAT. Print one with --dnat, e.g.\n")
		b.WriteString("\t#   knockgate rules --format nft --dnat tcp/2222=192.0.2.10:22\n")
	} else {
		b.WriteString("\n\tchain dstnat {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n")
		for _, d := range s.DNATs {
			fam := "ip6"
			if d.To.Addr().Unmap().Is4() {
				fam = "ip"
			}
			fmt.Fprintf(&b, "\t\t%s fib daddr type local %s dport %d dnat %s to %s\n", in, d.Port.Proto, d.Port.Num, fam, d.To)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String(), nil
}

// writeNftFailOpenHeader is writeFailOpenHeader in nftables' words.
func writeNftFailOpenHeader(b *strings.Builder, fo *FailOpen) {
	list := fo.protectedList()
	fmt.Fprintf(b, `# FAIL-OPEN, for the policy %s
# (gate { fail_open = true }). The queue statement has bypass: while the
# daemon is not running, and for packets that find its queue full, the
# kernel accepts new connections itself, so ports that no door names stay
# reachable. The daemon marks every packet it accepts with accept_mark,
#   %#x/%#x
# and the input and forward chains drop NEW connections without it whose
# original destination port (ct original proto-dst, the port the client
# dialled) is in the protected sets: protected ports stay closed whatever
# the daemon does. Protected ports:
#   %s
# Generate and load these rules again whenever a door's open list changes:
#   knockgate rules --format nft --config %s
`, fo.Policy, fo.Mark, fo.Mask, list, fo.Policy)
}
