package rules

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/knockgate/knockgate/verdict"
)

// Steering describes the static steering rules: the iptables and
// ip6tables rules, loaded once at boot and never changed at run time, that
// hand every NEW TCP and UDP connection addressed to the gateway to the
// gate's NFQUEUE in mangle PREROUTING, before DNAT, so the gate sees the
// port the client dialled.
type Steering struct {
	// Interface, when set, queues only packets arriving on it (the WAN
	// side); empty queues packets from every interface but lo.
	Interface string
	// Queue is the first NFQUEUE number, the policy's gate { queue }.
	Queue uint16
	// Queues is how many queues, numbered from Queue, the policy's
	// gate { queues }: from 1 to MaxQueues. With more than one, the rules
	// spread connections over them with --queue-balance.
	Queues int
	// DNATs are static forwards printed in each family's nat table, so a
	// door can open a gateway port that leads to a LAN host.
	DNATs []DNAT
	// FailOpen, when set, asks for fail-open rules (see FailOpen); nil
	// gives fail-closed rules: no --queue-bypass, so while no daemon reads
	// the queue the kernel drops every queued packet.
	FailOpen *FailOpen
}

// DNAT is a static forward of a gateway port to a LAN host. Each is
// printed for the family of its destination only.
type DNAT struct {
	// Port is the gateway port a client dials, the one doors name.
	Port verdict.Port
	// To is where the connection is forwarded.
	To netip.AddrPort
}

// FailOpen is what fail-open rules need from the policy. With it the
// rules queue with --queue-bypass, so that while the daemon is down or
// its queue is full the kernel accepts new connections itself, and add,
// in mangle INPUT and FORWARD, a drop of new connections to the protected
// ports unless the daemon marked them: ports no door names stay reachable,
// protected ports stay shut.
type FailOpen struct {
	// Policy names the policy file in the rules' header, which tells the
	// operator to regenerate the rules from it when a door's open list
	// changes.
	Policy string
	// Mark and Mask are the policy's accept_mark, which the daemon sets
	// on every packet it accepts.
	Mark, Mask uint32
	// Protected are the ports the doors open; the rules drop unmarked new
	// connections to each. Rules sorts them and drops repeats.
	Protected []verdict.Port
}

// NewFailOpen returns the fail-open part of the steering rules for a
// policy that sets gate { fail_open = true }: its file, accept mark and
// every port its doors open. It returns nil for a policy that fails
// closed, so the result can be put in Steering.FailOpen as it is.
func NewFailOpen(p *Policy) *FailOpen {
	if !p.FailOpen {
		return nil
	}
	return &FailOpen{
		Policy:    p.File,
		Mark:      p.AcceptMark,
		Mask:      p.AcceptMask,
		Protected: protectedPorts(p.Doors),
	}
}

// ValidInterface reports whether name may be Steering.Interface: empty,
// or at most 15 characters (the kernel's limit), each a letter, a digit or
// one of -_.@+, so that it can never break out of the rule it is put in.
func ValidInterface(name string) bool {
	if len(name) > 15 {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.@+", c)) {
			return false
		}
	}
	return true
}

// The marker lines that head each family's section of Rules, naming the
// command that loads it; a script splits the output at them.
const (
	IPv4Marker = "# ---- iptables-restore --noflush ----\n"
	IPv6Marker = "# ---- ip6tables-restore --noflush ----\n"
)

// Rules returns the steering rules for both families: iptables-restore
// input for IPv4, then ip6tables-restore input for IPv6, each after its
// marker line (IPv4Marker, IPv6Marker) so a script can split them. Each
// section is what Iptables gives for its family.
func (s Steering) Rules() (string, error) {
	v4, err := s.Iptables(false)
	if err != nil {
		return "", err
	}
	v6, err := s.Iptables(true)
	if err != nil {
		return "", err
	}
	return IPv4Marker + v4 + IPv6Marker + v6, nil
}

// Iptables returns one family's steering rules: iptables-restore input
// for IPv4, or ip6tables-restore input for IPv6 when v6 is set. Loading it
// any number of times, with --noflush or without, leaves the same rules
// (see writeLoadHeader for how). The same Steering always gives the same
// text. A field that would make the rules wrong or let a value escape its
// rule (an invalid interface, a queue range past 65535, a DNAT or
// protected port that is not TCP or UDP, an accept mark outside its mask,
// a line break in the policy's name) is refused with an error and no
// rules.
func (s Steering) Iptables(v6 bool) (string, error) {
	s, err := s.prepared()
	if err != nil {
		return "", err
	}
	return s.family(v6), nil
}

// prepared returns a checked copy of s whose protected ports are sorted
// and unique, leaving the caller's slice alone.
func (s Steering) prepared() (Steering, error) {
	if err := s.check(); err != nil {
		return Steering{}, err
	}
	if fo := s.FailOpen; fo != nil {
		c := *fo
		c.Protected = slices.Clone(c.Protected)
		slices.SortFunc(c.Protected, comparePorts)
		c.Protected = slices.Compact(c.Protected)
		s.FailOpen = &c
	}
	return s, nil
}

func (s Steering) check() error {
	if !ValidInterface(s.Interface) {
		return fmt.Errorf("invalid interface %q", s.Interface)
	}
	if s.Queues < 1 || s.Queues > MaxQueues || int(s.Queue)+s.Queues-1 > 65535 {
		return fmt.Errorf("invalid queues %d from queue %d: want 1 to %d, ending at most at 65535", s.Queues, s.Queue, MaxQueues)
	}
	for _, d := range s.DNATs {
		if !validPort(d.Port) || !d.To.IsValid() {
			return fmt.Errorf("invalid dnat %v to %v", d.Port, d.To)
		}
	}
	if fo := s.FailOpen; fo != nil {
		if fo.Mark == 0 || fo.Mark&^fo.Mask != 0 {
			return fmt.Errorf("invalid accept mark %#x/%#x: the value must be non-zero and inside the mask", fo.Mark, fo.Mask)
		}
		if strings.ContainsAny(fo.Policy, "\r\n") {
			return fmt.Errorf("invalid policy name %q: it has a line break", fo.Policy)
		}
		for _, p := range fo.Protected {
			if !validPort(p) {
				return fmt.Errorf("invalid protected port %v", p)
			}
		}
	}
	return nil
}

func validPort(p verdict.Port) bool {
	return (p.Proto == verdict.TCP || p.Proto == verdict.UDP) && p.Num != 0
}

func comparePorts(a, b verdict.Port) int {
	return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Num, b.Num))
}

// protectedPorts returns the ports the doors open, sorted by protocol and
// number, each once.
func protectedPorts(doors []verdict.Door) []verdict.Port {
	var ports []verdict.Port
	for _, d := range doors {
		ports = append(ports, d.Open...)
	}
	slices.SortFunc(ports, comparePorts)
	return slices.Compact(ports)
}

// portRun is a run of consecutive ports of one protocol.
type portRun struct {
	proto    verdict.Proto
	from, to uint16
}

func (r portRun) String() string {
	if r.from == r.to {
		return strconv.Itoa(int(r.from))
	}
	return fmt.Sprintf("%d:%d", r.from, r.to)
}

// portRuns folds sorted, unique ports into runs, so a door that opens
// tcp/6000 to tcp/6063 costs one rule, not 64.
func portRuns(ports []verdict.Port) []portRun {
	var rs []portRun
	for _, p := range ports {
		if n := len(rs); n > 0 && rs[n-1].proto == p.Proto && rs[n-1].to+1 == p.Num {
			rs[n-1].to = p.Num
			continue
		}
		rs = append(rs, portRun{p.Proto, p.Num, p.Num})
	}
	return rs
}

// QueueRange names queues, first and the ones after it, as iptables does:
// "0", or "0:1" for --queue-balance. The daemon's logs and status name
// them the same way.
func QueueRange(first uint16, queues int) string {
	if queues <= 1 {
		return strconv.Itoa(int(first))
	}
	return fmt.Sprintf("%d:%d", first, int(first)+queues-1)
}

// protectChain holds the fail-open drop rules, one per run of protected
// ports.
const protectChain = "KNOCKGATE-PROTECTED"

// family returns the rules of one family, from a checked Steering whose
// protected ports are sorted and unique.
func (s Steering) family(v6 bool) string {
	in := "! -i lo"
	if s.Interface != "" {
		in = "-i " + s.Interface
	}
	queue := "--queue-num " + strconv.Itoa(int(s.Queue))
	if s.Queues > 1 {
		// The kernel picks a queue by a hash of the address pair and
		// protocol, so a source's TCP and UDP knocks may land on
		// different queues; the engine shares their state.
		queue = "--queue-balance " + QueueRange(s.Queue, s.Queues)
	}
	fo := s.FailOpen
	var mine []DNAT
	for _, d := range s.DNATs {
		if d.To.Addr().Unmap().Is4() != v6 {
			mine = append(mine, d)
		}
	}
	owned := "mangle PREROUTING"
	if fo != nil {
		owned = "mangle PREROUTING, INPUT and FORWARD"
	}
	if len(mine) > 0 {
		owned += "; nat PREROUTING"
	}
	var b strings.Builder
	b.WriteString("# knockgate steering rules: static, loaded once, never changed at run time.\n")
	writeLoadHeader(&b, v6, owned)
	var mark string
	if fo != nil {
		queue += " --queue-bypass"
		mark = fmt.Sprintf("%#x/%#x", fo.Mark, fo.Mask)
		writeFailOpenHeader(&b, fo, mark)
	}
	b.WriteString("*mangle\n:KNOCKGATE - [0:0]\n")
	if fo != nil {
		fmt.Fprintf(&b, ":%s - [0:0]\n", protectChain)
	}
	b.WriteString("-F PREROUTING\n")
	if fo != nil {
		b.WriteString("-F INPUT\n-F FORWARD\n")
	}
	fmt.Fprintf(&b, "-A PREROUTING %s -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW -j KNOCKGATE\n", in)
	fmt.Fprintf(&b, "-A KNOCKGATE -p tcp -j NFQUEUE %s\n", queue)
	fmt.Fprintf(&b, "-A KNOCKGATE -p udp -j NFQUEUE %s\n", queue)
	if fo != nil && len(fo.Protected) > 0 {
		// Inserted, not appended, so that no ACCEPT in mangle INPUT or
		// FORWARD can skip them where these rules are merged into a
		// whole-table file after other rules. In FORWARD only DNATed
		// connections are the gate's: a LAN host's own connection out to
		// some server's port 22 was never queued and carries no mark.
		fmt.Fprintf(&b, "-I INPUT %s -m conntrack --ctstate NEW -m mark ! --mark %s -j %s\n", in, mark, protectChain)
		fmt.Fprintf(&b, "-I FORWARD %s -m conntrack --ctstate NEW -m conntrack --ctstate DNAT -m mark ! --mark %s -j %s\n", in, mark, protectChain)
		for _, r := range portRuns(fo.Protected) {
			fmt.Fprintf(&b, "-A %s -m conntrack --ctproto %s --ctorigdstport %s -j DROP\n", protectChain, r.proto, r)
		}
	}
	b.WriteString("COMMIT\n")
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
	b.WriteString("*nat\n-F PREROUTING\n")
	for _, d := range mine {
		fmt.Fprintf(&b, "-A PREROUTING %s -m addrtype --dst-type LOCAL -p %s --dport %d -j DNAT --to-destination %s\n", in, d.Port.Proto, d.Port.Num, d.To)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// writeLoadHeader says how to load one family's rules and which base
// chains they take over. iptables-restore input can add a rule but not
// add it only if it is missing: -D of an absent rule fails the whole
// load, and every -A, -I, -D or -R changes a chain's rule count by the
// same amount whether or not an earlier load is there, so a base chain
// holding rules of ours and of others cannot end with exactly one jump of
// ours after both a first and a second load. Only flushing the base chain
// can; so the rules flush the base chains they jump from, and their own
// chains, declared with :NAME, are emptied by iptables-restore itself.
func writeLoadHeader(b *strings.Builder, v6 bool, owned string) {
	family, tool, otherFlag, otherFamily, otherTool := "IPv4", "iptables-restore", "6", "IPv6", "ip6tables-restore"
	if v6 {
		family, tool, otherFlag, otherFamily, otherTool = "IPv6", "ip6tables-restore", "4", "IPv4", "iptables-restore"
	}
	fmt.Fprintf(b, `# %s: load with `+"`%s --noflush`"+` (knockgate rules -%s prints
# the %s rules, for %s). Loading again replaces them,
# never adds: iptables-restore cannot add a rule only if it is missing, so
# the rules empty their own chains and the base chains they jump from,
#   %s
# which then hold knockgate's rules only: any other rule there is removed
# on every load. Keep your own rules out of those chains, or merge these
# lines, without the -F lines, into a whole-table file (iptables-
# persistent's). Without --noflush, %s replaces the tables
# below whole, with every rule of yours in them.
`, family, tool, otherFlag, otherFamily, otherTool, owned, tool)
}

// protectedList names the protected ports for a header comment.
func (fo *FailOpen) protectedList() string {
	var ports []string
	for _, p := range fo.Protected {
		ports = append(ports, p.String())
	}
	if len(ports) == 0 {
		return "none (the policy's doors open no port)"
	}
	return strings.Join(ports, " ")
}

// writeFailOpenHeader explains the fail-open rules in comments: what the
// operator must know to keep them right.
func writeFailOpenHeader(b *strings.Builder, fo *FailOpen, mark string) {
	list := fo.protectedList()
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
`, fo.Policy, mark, protectChain, list, fo.Policy)
}
