package main

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

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
	fs := newFlags("rules", "[--interface IF] [--queue N] [--dnat tcp/2222=192.0.2.10:22 ...]",
		"Print the static steering rules: iptables-restore input for IPv4 and\n"+
			"ip6tables-restore input for IPv6. Load them once, at boot, before the\n"+
			"daemon starts; knockgate never changes them.\n\n"+
			"Every NEW TCP and UDP connection addressed to the gateway itself is queued\n"+
			"in mangle PREROUTING, before DNAT, so the daemon sees the port the client\n"+
			"dialled. Established traffic never enters the queue. The rules have no\n"+
			"--queue-bypass: while no daemon reads the queue, the kernel drops those\n"+
			"packets (fail-closed), so protected ports stay shut.", stderr)
	iface := fs.String("interface", "", "queue only packets arriving on this `interface` (the WAN side); default every interface but lo")
	queue := fs.Uint("queue", 0, "NFQUEUE `number`; must match the policy's gate { queue }")
	var dnats dnatFlag
	fs.Var(&dnats, "dnat", "also print a static DNAT forwarding `proto/port=address:port` to a LAN host (repeatable)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *queue > 65535 {
		return fmt.Errorf("invalid --queue %d: want 0 to 65535", *queue)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := validIface(*iface); err != nil {
		return err
	}
	fmt.Fprint(stdout, steeringRules(*iface, uint16(*queue), dnats))
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

// steeringRules returns the rules for both families, each a complete
// restore file between marker comments, so a script can split them.
func steeringRules(iface string, queue uint16, dnats []dnat) string {
	var b strings.Builder
	for _, v6 := range []bool{false, true} {
		tool := "iptables"
		if v6 {
			tool = "ip6tables"
		}
		fmt.Fprintf(&b, "# ---- %s-restore --noflush ----\n", tool)
		b.WriteString(familyRules(v6, iface, queue, dnats))
	}
	return b.String()
}

func familyRules(v6 bool, iface string, queue uint16, dnats []dnat) string {
	in := "! -i lo"
	if iface != "" {
		in = "-i " + iface
	}
	q := strconv.Itoa(int(queue))
	var b strings.Builder
	b.WriteString("# knockgate steering rules: static, loaded once, never changed at run time.\n")
	b.WriteString("*mangle\n:KNOCKGATE - [0:0]\n")
	fmt.Fprintf(&b, "-A PREROUTING %s -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW -j KNOCKGATE\n", in)
	fmt.Fprintf(&b, "-A KNOCKGATE -p tcp -j NFQUEUE --queue-num %s\n", q)
	fmt.Fprintf(&b, "-A KNOCKGATE -p udp -j NFQUEUE --queue-num %s\n", q)
	b.WriteString("COMMIT\n")
	var mine []dnat
	for _, d := range dnats {
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
