package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"slices"

	"github.com/knockgate/knockgate/rules"
)

// saveRuleset is the live mangle table of one family as iptables-save
// (ip6tables-save when v6) prints it; tests replace it.
var saveRuleset = func(v6 bool) (string, error) {
	cmd := "iptables-save"
	if v6 {
		cmd = "ip6tables-save"
	}
	var out, errOut bytes.Buffer
	c := exec.Command(cmd, "-t", "mangle")
	c.Stdout, c.Stderr = &out, &errOut
	if err := c.Run(); err != nil {
		return "", fmt.Errorf("failed to run %s -t mangle: %w: %s", cmd, err, bytes.TrimSpace(errOut.Bytes()))
	}
	return out.String(), nil
}

// listNft is `nft -j list ruleset`; tests replace it.
var listNft = func() ([]byte, error) {
	var out, errOut bytes.Buffer
	c := exec.Command("nft", "-j", "list", "ruleset")
	c.Stdout, c.Stderr = &out, &errOut
	if err := c.Run(); err != nil {
		return nil, fmt.Errorf("failed to run nft -j list ruleset: %w: %s", err, bytes.TrimSpace(errOut.Bytes()))
	}
	return out.Bytes(), nil
}

func cmdCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check", "[--config FILE] [--interface IF] [--format nft]",
		"Compare the live steering rules (iptables-save and ip6tables-save, mangle\n"+
			"table) with the ones the policy needs, as knockgate rules prints them:\n"+
			"the queue numbers, the fail-open bypass, accept mark and protected\n"+
			"ports, the interface. Names each rule that is missing, and each of\n"+
			"knockgate's rules that is there but stale. Exit status 0 when they\n"+
			"match, 1 when not. DNATs (rules --dnat) are not checked. Needs root.\n"+
			"With --format nft it reads nft's JSON listing (nft -j list ruleset)\n"+
			"instead and compares the same settings of the knockgate table.", stdout, stderr)
	config := fs.String("config", "/etc/knockgate/policy.hcl", "policy `file`")
	iface := fs.String("interface", "", "the `interface` the rules were printed for (rules --interface); default every interface but lo")
	format := fs.String("format", "iptables", "the `format` of the rules loaded: iptables or nft")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if err := validIface(*iface); err != nil {
		return err
	}
	pol, err := loadPolicy(*config, stderr)
	if err != nil {
		return err
	}
	spec := rules.Steering{Interface: *iface, Queue: pol.Queue, Queues: pol.Queues, FailOpen: rules.NewFailOpen(pol)}
	switch *format {
	case "iptables":
	case "nft":
		listing, err := listNft()
		if err != nil {
			return err
		}
		r, err := spec.CheckNft(listing, rules.CheckOptions{})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "nftables (table inet %s):\n%s\n", rules.NftTable, r)
		if !r.OK() {
			fmt.Fprintf(stdout, "the live rules differ from what %s needs: load them again with knockgate rules --format nft --config %s\n", *config, *config)
			return exitError{1}
		}
		return nil
	default:
		return usageErrorf("invalid --format %q: want iptables or nft", *format)
	}
	bad := false
	for _, fam := range []struct {
		v6   bool
		name string
	}{{false, "IPv4 (iptables)"}, {true, "IPv6 (ip6tables)"}} {
		saved, err := saveRuleset(fam.v6)
		if err != nil {
			return err
		}
		r, err := spec.CheckIptables(fam.v6, saved, rules.CheckOptions{})
		if err != nil {
			return fmt.Errorf("failed to generate the steering rules: %w", err)
		}
		fmt.Fprintf(stdout, "%s: %s\n", fam.name, r)
		bad = bad || !r.OK()
	}
	if bad {
		fmt.Fprintf(stdout, "the live rules differ from what %s needs: load them again with knockgate rules --config %s\n", *config, *config)
		return exitError{1}
	}
	return nil
}

// nftAtStart logs how knockgate's nftables table differs from the policy.
func nftAtStart(log *slog.Logger, r rules.CheckResult) {
	for _, f := range r.Missing {
		log.Warn("steering rule missing: the gate may not see the packets it should decide (knockgate check --format nft)", "family", "inet", "rule", f)
	}
	for _, f := range r.Stale {
		log.Warn("stale steering rule: not what the policy needs (knockgate check --format nft)", "family", "inet", "rule", f)
	}
}

// checkAtStart logs, as warnings, how the live iptables steering rules
// differ from what pol needs: a daemon whose queue no rule feeds decides
// nothing. It does not know the interface the rules were printed for, so
// it leaves interfaces out of the comparison. Where iptables-save cannot
// run (nftables rules, a container), it says so at debug level.
func checkAtStart(log *slog.Logger, pol *rules.Policy) {
	spec := rules.Steering{Queue: pol.Queue, Queues: pol.Queues, FailOpen: rules.NewFailOpen(pol)}
	// nftables rules, when knockgate's table is loaded, are the ones in use.
	if listing, err := listNft(); err == nil {
		r, err := spec.CheckNft(listing, rules.CheckOptions{AnyInterface: true})
		if err == nil && !slices.Contains(r.Missing, "table inet "+rules.NftTable) {
			nftAtStart(log, r)
			return
		}
	}
	for _, v6 := range []bool{false, true} {
		saved, err := saveRuleset(v6)
		if err != nil {
			log.Debug("steering rules not checked", "err", err)
			return
		}
		r, err := spec.CheckIptables(v6, saved, rules.CheckOptions{AnyInterface: true})
		if err != nil {
			log.Warn("steering rules not checked", "err", err)
			return
		}
		family := "ipv4"
		if v6 {
			family = "ipv6"
		}
		for _, l := range r.Missing {
			log.Warn("steering rule missing: the gate may not see the packets it should decide (knockgate check)", "family", family, "rule", l)
		}
		for _, l := range r.Stale {
			log.Warn("stale steering rule: not what the policy needs (knockgate check)", "family", family, "rule", l)
		}
	}
}
