package main

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/knockgate/knockgate/rules"
	"github.com/knockgate/knockgate/verdict"
)

// dnatFlag collects --dnat proto/port=host:port forwards.
type dnatFlag []rules.DNAT

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
	*f = append(*f, rules.DNAT{Port: p, To: ap})
	return nil
}

func cmdRules(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("rules", "[-4 | -6 | --format nft] [--config FILE] [--interface IF] [--queue N] [--queues N] [--dnat tcp/2222=192.0.2.10:22 ...]",
		"Print the static steering rules: iptables-restore input for IPv4 (-4),\n"+
			"ip6tables-restore input for IPv6 (-6), or, without either, both, each\n"+
			"after a marker line naming its command; or, with --format nft, one\n"+
			"nftables inet table for both. Load them at boot, before the daemon\n"+
			"starts, e.g. knockgate rules -4 --config POLICY | iptables-restore --noflush;\n"+
			"knockgate never changes them. Loading them again replaces them: the\n"+
			"iptables rules empty the base chains they jump from (mangle PREROUTING,\n"+
			"with fail_open also INPUT and FORWARD, with --dnat nat PREROUTING), so\n"+
			"keep other rules out of those chains; the nft rules replace their table.\n\n"+
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
			"ports: print and load them again whenever the doors' open lists change.", stdout, stderr)
	config := fs.String("config", "", "take the queue number and the fail mode from this policy `file` (and, when it fails open, its protected ports); default: fail-closed rules for --queue")
	iface := fs.String("interface", "", "queue only packets arriving on this `interface` (the WAN side); default every interface but lo")
	queue := fs.Uint("queue", 0, "NFQUEUE `number`; must match the policy's gate { queue }")
	queues := fs.Uint("queues", 1, "how many queues, numbered from --queue; must match the policy's gate { queues }")
	v4 := fs.Bool("4", false, "print only the IPv4 rules, for iptables-restore")
	v6 := fs.Bool("6", false, "print only the IPv6 rules, for ip6tables-restore")
	format := fs.String("format", "iptables", "output `format`: iptables (iptables-restore input) or nft (an nftables ruleset for nft -f, both families)")
	var dnats dnatFlag
	fs.Var(&dnats, "dnat", "also print a static DNAT forwarding `proto/port=address:port` to a LAN host (repeatable)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *queue > 65535 {
		return fmt.Errorf("invalid --queue %d: want 0 to 65535", *queue)
	}
	if *queues < 1 || *queues > rules.MaxQueues || *queue+*queues-1 > 65535 {
		return fmt.Errorf("invalid --queues %d: want 1 to %d, and --queue plus --queues at most 65536", *queues, rules.MaxQueues)
	}
	switch {
	case *format != "iptables" && *format != "nft":
		fmt.Fprintf(stderr, "knockgate rules: invalid --format %q: want iptables or nft\n", *format)
		return errUsage
	case *v4 && *v6:
		fmt.Fprintln(stderr, "knockgate rules: -4 and -6 exclude each other: give neither for both families")
		return errUsage
	case *format == "nft" && (*v4 || *v6):
		fmt.Fprintln(stderr, "knockgate rules: --format nft prints one inet table for both families: leave out -4 and -6")
		return errUsage
	}
	if err := validIface(*iface); err != nil {
		return err
	}
	spec := rules.Steering{Interface: *iface, Queue: uint16(*queue), Queues: int(*queues), DNATs: dnats}
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
		if queueSet && spec.Queue != pol.Queue {
			return fmt.Errorf("--queue %d disagrees with gate { queue = %d } in %s: leave --queue out, the policy's number is used", spec.Queue, pol.Queue, *config)
		}
		if queuesSet && spec.Queues != pol.Queues {
			return fmt.Errorf("--queues %d disagrees with gate { queues = %d } in %s: leave --queues out, the policy's number is used", spec.Queues, pol.Queues, *config)
		}
		spec.Queue, spec.Queues = pol.Queue, pol.Queues
		spec.FailOpen = rules.NewFailOpen(pol)
	}
	var out string
	var err error
	switch {
	case *format == "nft":
		out, err = spec.Nftables()
	case *v4 || *v6:
		out, err = spec.Iptables(*v6)
	default:
		out, err = spec.Rules()
	}
	if err != nil {
		return fmt.Errorf("failed to generate the steering rules: %w", err)
	}
	fmt.Fprint(stdout, out)
	return nil
}

// validIface checks --interface, naming the flag in its errors.
func validIface(s string) error {
	if rules.ValidInterface(s) {
		return nil
	}
	if len(s) > 15 {
		return fmt.Errorf("invalid --interface %q: longer than 15 characters", s)
	}
	return fmt.Errorf("invalid --interface %q", s)
}
