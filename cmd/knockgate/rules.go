package main

import (
	"cmp"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/knockgate/knockgate/rules"
	"github.com/knockgate/knockgate/verdict"
)

// dnatFlag collects --dnat proto/port=host:port forwards.
type dnatFlag []dnat

type dnat struct {
	port verdict.Port
	to   netip.AddrPort
}

func (f *dnatFlag) String() string { return "" }

func (f *dnatFlag) Set(s string) error {
	from, to, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("%q is not of the form proto/port=address:port", s)
	}
	p, err := verdict.ParsePort(from)
	if err != nil {
		return err
	}
	ap, err := netip.ParseAddrPort(to)
	if err != nil {
		return fmt.Errorf("%q: invalid destination: %w", s, err)
	}
	*f = append(*f, dnat{p, ap})
	return nil
}

func cmdRules(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("rules", "[--config FILE] [--interface IF] [--queue N] [--queues N] [--dnat tcp/2222=192.0.2.10:22 ...]",
		"Print the static steering rules: iptables-restore input for IPv4 and\n"+
			"ip6tables-restore input for IPv6. Load them once, at boot, before the\n"+
			"daemon starts; knockgate never changes them.\n\n"+
			"Every NEW TCP and UDP connection addressed to the gateway itself is queued\n"+
			"in mangle PREROUTING, before DNAT, so the daemon sees the port the client\n"+
			"dialled. Established traffic never enters the queue. With more than one\n"+
			"queue, --queue-balance spreads connections over them by address pair.\n\n"+
			"Without --config, or with a policy that leaves fail_open off, the rules\n"+
			"have no --queue-bypass: while no daemon reads the queue, the kernel drops\n"+
			"those packets (fail-closed), so every queued port is shut. With a policy\n"+
			"that sets fail_open = true, the rules queue with --queue-bypass and add,\n"+
			"in mangle INPUT and FORWARD, a drop of new connections to the ports the\n"+
			"policy's doors open unless the daemon marked them (accept_mark): while\n"+
			"the daemon is down or its queue overflows, ports that no door names stay\n"+
			"reachable and protected ports stay shut. Those rules list the protected\n"+
			"ports: print and load them again whenever the doors' open lists change.", stderr)
	config := fs.String("config", "", "take the queue number and the fail mode from this policy `file` (and, when it fails open, its protected ports); default: fail-closed rules for --queue")
	iface := fs.String("interface", "", "queue only packets arriving on this `interface` (the WAN side); default every interface but lo")
	queue := fs.Uint("queue", 0, "NFQUEUE `number`; must match the policy's gate { queue }")
	queues := fs.Uint("queues", 1, "how many queues, numbered from --queue; must match the policy's gate { queues }")
	var dnats dnatFlag
	fs.Var(&dnats, "dnat", "also print a static DNAT forwarding `proto/port=address:port` to a LAN host (repeatable)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *queue > 65535 {
		return fmt.Errorf("invalid --queue %d: want 0 to 65535", *queue)
	}
	if *queues < 1 || *queues > rules.MaxQueues || *queue+*queues-1 > 65535 {
		return fmt.Errorf("invalid --queues %d: want 1 to %d, and --queue plus --queues at most 65536", *queues, rules.MaxQueues)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := validIface(*iface); err != nil {
		return err
	}
	spec := ruleSpec{iface: *iface, queue: uint16(*queue), queues: int(*queues), dnats: dnats}
	if *config != "" {
		queueSet, queuesSet := false, false
		fs.Visit(func(f *flag.Flag) {
			queueSet = queueSet || f.Name == "queue"
			queuesSet = queuesSet || f.Name == "queues"
		})
		pol, err := loadPolicy(*config, stderr)
		if err != nil {
			return err
		}
		if queueSet && spec.queue != pol.Queue {
			return fmt.Errorf("--queue %d disagrees with gate { queue = %d } in %s: leave --queue out, the policy's number is used", spec.queue, pol.Queue, *config)
		}
		if queuesSet && spec.queues != pol.Queues {
			return fmt.Errorf("--queues %d disagrees with gate { queues = %d } in %s: leave --queues out, the policy's number is used", spec.queues, pol.Queues, *config)
		}
		spec.queue, spec.queues = pol.Queue, pol.Queues
		if pol.FailOpen {
			spec.failOpen = &failOpen{
				policy:    *config,
				mark:      pol.AcceptMark,
				mask:      pol.AcceptMask,
				protected: protectedPorts(pol.Doors),
			}
		}
	}
	fmt.Fprint(stdout, steeringRules(spec))
	return nil
}

func validIface(s string) error {
	if len(s) > 15 {
		return fmt.Errorf("invalid --interface %q: longer than 15 characters", s)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.@+", c)) {
			return fmt.Errorf("invalid --interface %q", s)
		}
	}
	return nil
}

// ruleSpec is what the steering rules are printed from.
type ruleSpec struct {
	iface  string
	queue  uint16
	queues int // 1 or more
	dnats  []dnat
	// failOpen, when set, asks for fail-open rules; nil fails closed.
	failOpen *failOpen
}

// failOpen is what fail-open rules need from the policy.
type failOpen struct {
	policy     string // the file, named in the header
	mark, mask uint32
	// protected is every port a door opens, sorted, each once.
	protected []verdict.Port
}

// protectedPorts returns the ports the doors open, sorted by protocol and
// number, each once.
func protectedPorts(doors []verdict.Door) []verdict.Port {
	var ports []verdict.Port
	for _, d := range doors {
		ports = append(ports, d.Open...)
	}
	slices.SortFunc(ports, func(a, b verdict.Port) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Num, b.Num))
	})
	return slices.Compact(ports)
}

// portRange is a run of consecutive ports of one protocol.
type portRange struct {
	proto    verdict.Proto
	from, to uint16
}

func (r portRange) String() string {
	if r.from == r.to {
		return strconv.Itoa(int(r.from))
	}
	return fmt.Sprintf("%d:%d", r.from, r.to)
}

// portRanges folds sorted, unique ports into runs, so a door that opens
// tcp/6000 to tcp/6063 costs one rule, not 64.
func portRanges(ports []verdict.Port) []portRange {
	var rs []portRange
	for _, p := range ports {
		if n := len(rs); n > 0 && rs[n-1].proto == p.Proto && rs[n-1].to+1 == p.Num {
			rs[n-1].to = p.Num
			continue
		}
		rs = append(rs, portRange{p.Proto, p.Num, p.Num})
	}
	return rs
}

// steeringRules returns the rules for both families, each a complete
// restore file between marker comments, so a script can split them.
func steeringRules(spec ruleSpec) string {
	var b strings.Builder
	for _, v6 := range []bool{false, true} {
		tool := "iptables"
		if v6 {
			tool = "ip6tables"
		}
		fmt.Fprintf(&b, "# ---- %s-restore --noflush ----\n", tool)
		b.WriteString(familyRules(v6, spec))
	}
	return b.String()
}

// protectChain holds the fail-open drop rules, one per run of protected
// ports.
const protectChain = "KNOCKGATE-PROTECTED"

func familyRules(v6 bool, spec ruleSpec) string {
	in := "! -i lo"
	if spec.iface != "" {
		in = "-i " + spec.iface
	}
	queue := "--queue-num " + strconv.Itoa(int(spec.queue))
	if spec.queues > 1 {
		// The kernel picks a queue by a hash of the address pair and
		// protocol, so a source's TCP and UDP knocks may land on
		// different queues; the engine shares their state.
		queue = "--queue-balance " + queueNames(spec.queue, spec.queues)
	}
	fo := spec.failOpen
	var b strings.Builder
	b.WriteString("# knockgate steering rules: static, loaded once, never changed at run time.\n")
	var mark string
	if fo != nil {
		queue += " --queue-bypass"
		mark = fmt.Sprintf("%#x/%#x", fo.mark, fo.mask)
		writeFailOpenHeader(&b, fo, mark)
	}
	b.WriteString("*mangle\n:KNOCKGATE - [0:0]\n")
	if fo != nil {
		fmt.Fprintf(&b, ":%s - [0:0]\n", protectChain)
	}
	fmt.Fprintf(&b, "-A PREROUTING %s -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW -j KNOCKGATE\n", in)
	fmt.Fprintf(&b, "-A KNOCKGATE -p tcp -j NFQUEUE %s\n", queue)
	fmt.Fprintf(&b, "-A KNOCKGATE -p udp -j NFQUEUE %s\n", queue)
	if fo != nil && len(fo.protected) > 0 {
		// Inserted, not appended, so that no ACCEPT already in mangle
		// INPUT or FORWARD can skip them. In FORWARD only DNATed
		// connections are the gate's: a LAN host's own connection out to
		// some server's port 22 was never queued and carries no mark.
		fmt.Fprintf(&b, "-I INPUT %s -m conntrack --ctstate NEW -m mark ! --mark %s -j %s\n", in, mark, protectChain)
		fmt.Fprintf(&b, "-I FORWARD %s -m conntrack --ctstate NEW -m conntrack --ctstate DNAT -m mark ! --mark %s -j %s\n", in, mark, protectChain)
		for _, r := range portRanges(fo.protected) {
			fmt.Fprintf(&b, "-A %s -m conntrack --ctproto %s --ctorigdstport %s -j DROP\n", protectChain, r.proto, r)
		}
	}
	b.WriteString("COMMIT\n")
	var mine []dnat
	for _, d := range spec.dnats {
		if d.to.Addr().Unmap().Is4() != v6 {
			mine = append(mine, d)
		}
	}
	if len(mine) == 0 {
		b.WriteString("# A door may open a gateway port that a static DNAT forwards to a LAN host;\n")
		b.WriteString("# the gate sees the port before DNAT. Print one with --dnat, for example:\n")
		if v6 {
			b.WriteString("#   knockgate rules --dnat tcp/2222=[2001:db8:2::10]:22\n")
		} else {
			b.WriteString("#   knockgate rules --dnat tcp/2222=192.0.2.10:22\n")
		}
		return b.String()
	}
	b.WriteString("*nat\n")
	for _, d := range mine {
		fmt.Fprintf(&b, "-A PREROUTING %s -m addrtype --dst-type LOCAL -p %s --dport %d -j DNAT --to-destination %s\n", in, d.port.Proto, d.port.Num, d.to)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// writeFailOpenHeader explains the fail-open rules in comments: what the
// operator must know to keep them right.
func writeFailOpenHeader(b *strings.Builder, fo *failOpen, mark string) {
	var ports []string
	for _, p := range fo.protected {
		ports = append(ports, p.String())
	}
	list := strings.Join(ports, " ")
	if list == "" {
		list = "none (the policy's doors open no port)"
	}
	fmt.Fprintf(b, `# FAIL-OPEN, for the policy %s
# (gate { fail_open = true }). The NFQUEUE rules have --queue-bypass:
# while the daemon is not running, and for packets that find its queue
# full, the kernel accepts new connections itself, so ports that no door
# names stay reachable. The daemon marks every packet it accepts with
# accept_mark,
#   %s
# and the kernel's own accepts carry no mark. A verdict or a bypass ends a
# packet's walk through mangle PREROUTING, so the %s rules
# sit later, in mangle INPUT and FORWARD, where DNAT has rewritten the
# destination: they drop NEW connections without the mark whose original
# destination port (--ctorigdstport, the port the client dialled) is one a
# door opens. Protected ports stay closed whatever the daemon does; knock
# and SPA ports, while it is down, answer as any port nothing listens on.
# Protected ports:
#   %s
# These rules depend on the policy's protected ports: generate and load
# them again whenever a door's open list changes, with
#   knockgate rules --config %s
# They still never change per knock, grant or daemon reload.
`, fo.policy, mark, protectChain, list, fo.policy)
}
