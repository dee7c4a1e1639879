package rules

import (
	"fmt"
	"math/big"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/knockgate/knockgate/verdict"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// boolean reads a true/false setting; of follows its name in the summary
// (` of door "nas"`), or is empty.
func (c *compiler) boolean(a *hcl.Attribute, of string) (bool, bool) {
	v, d := a.Expr.Value(nil)
	if d.HasErrors() || !v.IsKnown() || v.Type() != cty.Bool {
		c.errorf(a.Expr.Range().Ptr(), &a.Range, a.Name+" is true or false.", "%s%s is not a bool", a.Name, of)
		return false, false
	}
	return v.True(), true
}

// relative resolves a path in the policy (keys_file, secret_file) against
// the policy file's directory, so a policy and its keys can move together.
func (c *compiler) relative(path string) string {
	if filepath.IsAbs(path) || c.dir == "" {
		return path
	}
	return filepath.Join(c.dir, path)
}

// path reads an absolute file path setting; empty is allowed only when
// emptyOK, where it turns the feature off.
func (c *compiler) path(a *hcl.Attribute, what, detail string, emptyOK bool) (string, bool) {
	s, ok := c.str(a.Expr, &a.Range, what)
	if !ok {
		return "", false
	}
	if (s == "" && !emptyOK) || (s != "" && !filepath.IsAbs(s)) {
		c.errorf(a.Expr.Range().Ptr(), &a.Range, detail, "invalid %s %q: want an absolute path", what, s)
		return "", false
	}
	return filepath.Clean(s), true
}

// present tells whether attr is set. A null value counts as unset, as it
// does in Terraform, so a generated policy can leave a setting to its
// default.
func present(attr *hcl.Attribute) bool {
	if attr == nil {
		return false
	}
	v, diags := attr.Expr.Value(nil)
	return diags.HasErrors() || !v.IsNull()
}

// list gives the elements of a list attribute, each with its own range.
func (c *compiler) list(door string, attr *hcl.Attribute, example string) ([]hcl.Expression, bool) {
	elems, diags := hcl.ExprList(attr.Expr)
	if diags.HasErrors() {
		c.errorf(attr.Expr.Range().Ptr(), &attr.Range,
			fmt.Sprintf("It must be a list written out in brackets, such as %s = %s.", attr.Name, example),
			"door %q %s is not a list", door, attr.Name)
		return nil, false
	}
	return elems, true
}

func (c *compiler) ports(door string, attr *hcl.Attribute) (*portList, bool) {
	elems, ok := c.list(door, attr, `["tcp/7000", "udp/8000"]`)
	if !ok {
		return nil, false
	}
	l := &portList{attr: attr}
	for _, e := range elems {
		s, sok := c.str(e, &attr.Range, fmt.Sprintf("door %q %s element", door, attr.Name))
		if !sok {
			ok = false
			continue
		}
		p, err := verdict.ParsePort(s)
		if err != nil {
			c.errorf(e.Range().Ptr(), &attr.Range, err.Error()+".",
				"invalid port %q in door %q %s", s, door, attr.Name)
			ok = false
			continue
		}
		l.ports = append(l.ports, p)
		l.elems = append(l.elems, e.Range())
	}
	return l, ok
}

func (c *compiler) prefixes(door string, attr *hcl.Attribute) []netip.Prefix {
	elems, ok := c.list(door, attr, `["198.51.100.0/24", "2001:db8::/32"]`)
	if !ok {
		return nil
	}
	if len(elems) == 0 {
		// An empty allow_from reads as "no one", but the engine takes no
		// prefixes to mean anyone; refuse rather than fail open.
		c.errorf(attr.Expr.Range().Ptr(), &attr.Range,
			"Leave allow_from out to let anyone knock, or list the networks that may.",
			"door %q allow_from is empty", door)
		return nil
	}
	var out []netip.Prefix
	for _, e := range elems {
		s, ok := c.str(e, &attr.Range, fmt.Sprintf("door %q allow_from element", door))
		if !ok {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			detail := err.Error() + "."
			if a, aerr := netip.ParseAddr(s); aerr == nil {
				a = a.WithZone("")
				detail = fmt.Sprintf("A network needs a prefix length; for the one address write %q.",
					netip.PrefixFrom(a, a.BitLen()).String())
			}
			c.errorf(e.Range().Ptr(), &attr.Range, detail,
				"invalid CIDR %q in door %q allow_from", s, door)
			continue
		}
		// The gate hands the engine IPv4 sources as 4-byte addresses, which
		// an IPv4-mapped IPv6 prefix would never contain.
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out
}

// bound is the upper bound of a duration setting, and why it is that.
type bound struct {
	max time.Duration
	why string
}

// The upper bounds of the duration settings. Past them a setting is a
// mistake, and one as long as a Go duration holds ("2562047h") would
// overflow the engine's deadlines (which saturate as well, in case a
// policy comes from elsewhere).
var (
	maxSequenceTimeout = bound{time.Hour, "A knock client sends its knocks within seconds; a longer timeout only gives a guesser more time."}
	maxOpenFor         = bound{7 * 24 * time.Hour, "A grant is a window to start connections in, a few minutes at most as a rule; one open for longer is a standing open port, which allow_from or the firewall says better."}
	maxSPAAge          = bound{time.Hour, "It bounds how far an SPA packet's clock may be from the gate's (fwknopd allows 2 minutes), and every used packet is remembered that long against replay."}
	maxTOTPStep        = bound{time.Hour, "A TOTP sequence is accepted for two steps; a longer step keeps a sequence good for hours."}
	maxPenaltyWithin   = bound{24 * time.Hour, "Failures are counted over this window; a day is already far longer than a brute force takes to show."}
	maxPenaltyBan      = bound{30 * 24 * time.Hour, "A ban outlives the attack it stops by far at a month; for a source to be shut out for good, use the firewall."}
)

// boundText writes a bound as policies write durations, with the days for
// those that run to days.
func boundText(d time.Duration) string {
	if d%time.Hour != 0 {
		return d.String()
	}
	s := fmt.Sprintf("%dh", d/time.Hour)
	if d >= 48*time.Hour && d%(24*time.Hour) == 0 {
		s += fmt.Sprintf(" (%d days)", d/(24*time.Hour))
	}
	return s
}

// duration reads a duration setting of owner (`door "ssh"`, `penalty`),
// from above zero up to b.max, falling back to def when it is unset or
// invalid (an invalid one has been reported).
func (c *compiler) duration(owner string, attr *hcl.Attribute, def time.Duration, b bound) time.Duration {
	d := def
	if !present(attr) {
		return d
	}
	s, ok := c.str(attr.Expr, &attr.Range, owner+" "+attr.Name)
	if !ok {
		return d
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		c.errorf(attr.Expr.Range().Ptr(), &attr.Range,
			fmt.Sprintf("Durations are written as Go writes them, such as \"30s\", \"5m\" or \"1h30m\": %v.", err),
			"invalid %s %q in %s", attr.Name, s, owner)
		return d
	}
	if v <= 0 {
		c.errorf(attr.Expr.Range().Ptr(), &attr.Range,
			"It must be above zero.",
			"%s %s %q is not positive", owner, attr.Name, s)
		return d
	}
	if v > b.max {
		c.errorf(attr.Expr.Range().Ptr(), &attr.Range, b.why,
			"%s %s %q is above %s", owner, attr.Name, s, boundText(b.max))
		return d
	}
	return v
}

// str evaluates expr as a string; what names it in diagnostics.
func (c *compiler) str(expr hcl.Expression, context *hcl.Range, what string) (string, bool) {
	v, diags := expr.Value(nil)
	if diags.HasErrors() {
		c.diags = append(c.diags, diags...)
		return "", false
	}
	if v.IsNull() {
		c.errorf(expr.Range().Ptr(), context, "A string is required here.", "%s is null", what)
		return "", false
	}
	sv, err := convert.Convert(v, cty.String)
	if err != nil {
		c.errorf(expr.Range().Ptr(), context,
			fmt.Sprintf("A string is required here, not %s.", v.Type().FriendlyName()),
			"%s is not a string", what)
		return "", false
	}
	if !sv.IsWhollyKnown() || sv.IsMarked() {
		c.errorf(expr.Range().Ptr(), context, "A literal string is required here.", "%s is not a plain string", what)
		return "", false
	}
	return sv.AsString(), true
}

// whole evaluates attr as a whole number from lo to hi; detail says why the
// range is what it is.
func (c *compiler) whole(attr *hcl.Attribute, lo, hi int64, detail string) (int64, bool) {
	v, diags := attr.Expr.Value(nil)
	if diags.HasErrors() {
		c.diags = append(c.diags, diags...)
		return 0, false
	}
	nv, err := convert.Convert(v, cty.Number)
	if err != nil || nv.IsNull() || !nv.IsWhollyKnown() || nv.IsMarked() {
		c.errorf(attr.Expr.Range().Ptr(), &attr.Range,
			fmt.Sprintf("A whole number is required here, not %s.", v.Type().FriendlyName()),
			"%s is not a number", attr.Name)
		return 0, false
	}
	f := nv.AsBigFloat()
	if !f.IsInt() {
		c.errorf(attr.Expr.Range().Ptr(), &attr.Range, detail,
			"%s %s is not a whole number", attr.Name, c.text(attr.Expr.Range()))
		return 0, false
	}
	n, acc := f.Int64()
	if acc != big.Exact || n < lo || n > hi {
		c.errorf(attr.Expr.Range().Ptr(), &attr.Range, detail,
			"%s %s is out of range", attr.Name, c.text(attr.Expr.Range()))
		return 0, false
	}
	return n, true
}
