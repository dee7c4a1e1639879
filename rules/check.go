package rules

import (
	"bufio"
	"fmt"
	"slices"
	"strings"
)

// Checking the live ruleset against the steering rules a policy needs: a
// daemon that binds its queue while no rule queues to it decides nothing,
// and says "ready" all the same. CheckIptables reads what iptables-save
// (or ip6tables-save) prints and names the rules of Iptables that are
// missing and the knockgate rules that are there but not wanted (stale:
// another queue number, a fail mode or accept mark the policy no longer
// has, a protected port no door opens any more).

// CheckResult is what a check found; both lists empty means the live
// rules are the ones the policy needs.
type CheckResult struct {
	// Missing are rules the policy needs that the ruleset lacks, as
	// iptables-save would print them.
	Missing []string
	// Stale are knockgate's rules in the ruleset that the policy does not
	// need.
	Stale []string
}

// OK reports whether nothing is missing or stale.
func (r CheckResult) OK() bool { return len(r.Missing) == 0 && len(r.Stale) == 0 }

// CheckOptions tune a check.
type CheckOptions struct {
	// AnyInterface compares the rules without their interface match, for
	// a check that does not know which interface the rules were printed
	// for (the daemon's at start).
	AnyInterface bool
}

// CheckIptables compares saved, iptables-save output (ip6tables-save's
// when v6), with the rules Iptables(v6) gives. DNATs are not checked:
// they are the operator's (rules --dnat), not the policy's.
func (s Steering) CheckIptables(v6 bool, saved string, opt CheckOptions) (CheckResult, error) {
	s.DNATs = nil
	want, err := s.Iptables(v6)
	if err != nil {
		return CheckResult{}, err
	}
	norm := func(line string) string { return normalizeSaved(line, opt.AnyInterface) }
	wantLines := savedRules(want, "mangle", norm)
	live := savedRules(saved, "mangle", norm)
	var r CheckResult
	for _, l := range wantLines {
		if !slices.Contains(live, l) {
			r.Missing = append(r.Missing, l)
		}
	}
	for _, l := range live {
		if ours(l) && !slices.Contains(wantLines, l) {
			r.Stale = append(r.Stale, l)
		}
	}
	return r, nil
}

// savedRules returns the rules ("-A CHAIN ...") of table in save text,
// each normalized.
func savedRules(text, table string, norm func(string) string) []string {
	var out []string
	in := false
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "*"):
			in = line[1:] == table
		case in && (strings.HasPrefix(line, "-A ") || strings.HasPrefix(line, "-I ")):
			out = append(out, norm(line))
		}
	}
	return out
}

// normalizeSaved writes a rule as iptables-save prints it: -I becomes -A,
// conntrack's protocol names become numbers; without the interface match
// when anyIface.
func normalizeSaved(line string, anyIface bool) string {
	f := strings.Fields(line)
	if f[0] == "-I" {
		f[0] = "-A"
	}
	var out []string
	for i := 0; i < len(f); i++ {
		switch {
		case f[i] == "--ctproto" && i+1 < len(f):
			proto := f[i+1]
			if n, ok := protoNumbers[proto]; ok {
				proto = n
			}
			out = append(out, f[i], proto)
			i++
			continue
		case anyIface && f[i] == "!" && i+2 < len(f) && f[i+1] == "-i":
			i += 2
			continue
		case anyIface && f[i] == "-i" && i+1 < len(f):
			i++
			continue
		}
		out = append(out, f[i])
	}
	return strings.Join(out, " ")
}

var protoNumbers = map[string]string{"tcp": "6", "udp": "17"}

// ours reports whether a saved rule is one of knockgate's: in or to its
// chains, or queueing to NFQUEUE.
func ours(rule string) bool {
	f := strings.Fields(rule)
	return len(f) > 1 && strings.HasPrefix(f[1], "KNOCKGATE") ||
		strings.Contains(rule, "-j KNOCKGATE") || strings.Contains(rule, "-j NFQUEUE")
}

// String names what a check found, one line each, or "ok".
func (r CheckResult) String() string {
	if r.OK() {
		return "ok"
	}
	var b strings.Builder
	for _, l := range r.Missing {
		fmt.Fprintf(&b, "missing: %s\n", l)
	}
	for _, l := range r.Stale {
		fmt.Fprintf(&b, "stale:   %s\n", l)
	}
	return strings.TrimSuffix(b.String(), "\n")
}
