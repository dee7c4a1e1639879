package rules

import (
	"fmt"
	"math"
	"math/big"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/knockgate/knockgate/verdict"
)

// fileSchema is decoded by hand rather than with gohcl because gohcl keeps
// no block label ranges, and a duplicate door name is best pointed at by its
// label.
var fileSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "gate"},
		{Type: "metrics"},
		{Type: "penalty"},
		{Type: "door", LabelNames: []string{"name"}},
	},
}

// rawGate and rawDoor hold attributes rather than decoded values: the checks
// point at the offending value, and for a list at the offending element,
// which a decoded []string could no longer tell apart. Every field is
// optional to gohcl so that a missing sequence or open gets a message naming
// the door instead of gohcl's generic one.
type rawGate struct {
	Queue       *hcl.Attribute `hcl:"queue,optional"`
	Queues      *hcl.Attribute `hcl:"queues,optional"`
	Unprotected *hcl.Attribute `hcl:"unprotected,optional"`
	MaxSources  *hcl.Attribute `hcl:"max_sources,optional"`
	MaxGrants   *hcl.Attribute `hcl:"max_grants,optional"`
	MaxReplay   *hcl.Attribute `hcl:"max_replay,optional"`
	FailOpen    *hcl.Attribute `hcl:"fail_open,optional"`
	AcceptMark  *hcl.Attribute `hcl:"accept_mark,optional"`
	StateFile   *hcl.Attribute `hcl:"state_file,optional"`
	Control     *hcl.Attribute `hcl:"control_socket,optional"`
}

type rawPenalty struct {
	Failures   *hcl.Attribute `hcl:"failures,optional"`
	Within     *hcl.Attribute `hcl:"within,optional"`
	Ban        *hcl.Attribute `hcl:"ban,optional"`
	MaxSources *hcl.Attribute `hcl:"max_sources,optional"`
}

type rawMetrics struct {
	Listen *hcl.Attribute `hcl:"listen,optional"`
}

type rawDoor struct {
	Sequence        *hcl.Attribute `hcl:"sequence,optional"`
	SequenceTimeout *hcl.Attribute `hcl:"sequence_timeout,optional"`
	Open            *hcl.Attribute `hcl:"open,optional"`
	OpenFor         *hcl.Attribute `hcl:"open_for,optional"`
	CloseSequence   *hcl.Attribute `hcl:"close_sequence,optional"`
	AllowFrom       *hcl.Attribute `hcl:"allow_from,optional"`
	MaxConnections  *hcl.Attribute `hcl:"max_connections,optional"`
	// TOTP and SPA are decoded in two steps (totpBlock, spaBlock), which
	// look up the blocks' own ranges (nestedRange).
	TOTP *struct {
		Body hcl.Body `hcl:",remain"`
	} `hcl:"totp,block"`
	SPA *struct {
		Body hcl.Body `hcl:",remain"`
	} `hcl:"spa,block"`
}

type rawSPA struct {
	Port           *hcl.Attribute `hcl:"port,optional"`
	KeyBase64      *hcl.Attribute `hcl:"key_base64,optional"`
	HMACKeyBase64  *hcl.Attribute `hcl:"hmac_key_base64,optional"`
	KeysFile       *hcl.Attribute `hcl:"keys_file,optional"`
	HMACDigest     *hcl.Attribute `hcl:"hmac_digest,optional"`
	Mode           *hcl.Attribute `hcl:"encryption_mode,optional"`
	MaxAge         *hcl.Attribute `hcl:"max_age,optional"`
	MaxOpenFor     *hcl.Attribute `hcl:"max_open_for,optional"`
	AllowAnySource *hcl.Attribute `hcl:"allow_any_source,optional"`
}

// maxCap bounds the table caps: max_sources, max_grants, max_replay and
// the penalty box's max_sources. The engine allocates its tables for the
// caps when it starts, at some 100 to 200 bytes an entry (a hash table at
// most half full), so a cap in the billions would not fail here but kill
// the daemon when it starts; ten million entries is a gigabyte or two.
const maxCap = 10_000_000

// compiler collects diagnostics while it builds a Policy, so that one run
// reports every problem.
type compiler struct {
	// dir is the policy file's directory, against which relative paths
	// (keys_file) are read.
	dir   string
	src   []byte
	diags hcl.Diagnostics
}

// text gives the source text of r, shortened, for quoting a value as it was
// written: formatting a number as big as HCL allows could take seconds.
func (c *compiler) text(r hcl.Range) string {
	if r.Start.Byte < 0 || r.Start.Byte > r.End.Byte || r.End.Byte > len(c.src) {
		return "value"
	}
	const max = 40
	s := c.src[r.Start.Byte:r.End.Byte]
	if len(s) > max {
		return string(s[:max]) + "..."
	}
	return string(s)
}

// doorSrc is a compiled door together with the source ranges the checks
// across doors point at.
type doorSrc struct {
	door verdict.Door
	// seq, closeSeq and open are nil when absent or invalid, so a list
	// already reported is not reported again by the checks across doors.
	seq, closeSeq, open *portList
	// closeIsSeq is set when close_sequence repeats sequence, which is
	// reported once as such rather than again as a shared first knock.
	closeIsSeq bool
	// spaPort is where the spa block names its port, when it is valid;
	// totpRange where the totp block names its ports.
	spaPort, totpRange *hcl.Range
}

// portList is a parsed list of ports with each element's range.
type portList struct {
	attr  *hcl.Attribute
	ports []verdict.Port
	elems []hcl.Range
}

func (c *compiler) errorf(subject, context *hcl.Range, detail, summaryFormat string, args ...any) {
	c.diags = append(c.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf(summaryFormat, args...),
		Detail:   detail,
		Subject:  subject,
		Context:  context,
	})
}

func (c *compiler) compile(body hcl.Body) *Policy {
	p := &Policy{
		Policy: verdict.Policy{
			Unprotected: DefaultUnprotected,
			MaxSources:  verdict.DefaultMaxSources,
			MaxGrants:   verdict.DefaultMaxGrants,
			MaxReplay:   verdict.DefaultMaxReplay,
			Penalty:     verdict.DefaultPenalty,
		},
		Queue:         DefaultQueue,
		Queues:        DefaultQueues,
		AcceptMark:    DefaultAcceptMark,
		AcceptMask:    DefaultAcceptMask,
		StateFile:     DefaultStateFile,
		ControlSocket: DefaultControlSocket,
		MetricsListen: DefaultMetricsListen,
	}
	content, diags := body.Content(fileSchema)
	c.diags = append(c.diags, diags...)
	if content == nil {
		return p
	}
	// The settings blocks may each appear once; singles maps a block type
	// to what reads it and remembers the first one seen.
	singles := map[string]struct {
		first *hcl.Block
		read  func(*hcl.Block, *Policy)
	}{"gate": {read: c.gate}, "metrics": {read: c.metrics}, "penalty": {read: c.penalty}}
	named := map[string]*hcl.Block{}
	var doors []*doorSrc
	for _, b := range content.Blocks {
		switch b.Type {
		case "gate", "metrics", "penalty":
			one := singles[b.Type]
			if one.first != nil {
				c.errorf(b.DefRange.Ptr(), nil,
					fmt.Sprintf("The first %s block is at %s; put every %s setting in it.", b.Type, pos(one.first.DefRange), b.Type),
					"duplicate %s block", b.Type)
				continue
			}
			one.first = b
			singles[b.Type] = one
			one.read(b, p)
		case "door":
			if len(b.Labels) != 1 {
				continue // hcl has reported the missing or extra label
			}
			d := c.door(b)
			name := b.Labels[0]
			if first, ok := named[name]; ok {
				c.errorf(b.LabelRanges[0].Ptr(), b.DefRange.Ptr(),
					fmt.Sprintf("The first door %q is at %s. Door names label log lines and metrics, so each must be unique.", name, pos(first.LabelRanges[0])),
					"duplicate door name %q", name)
				// A copy of a door would clash with the original on every
				// knock; one report is enough.
				continue
			}
			named[name] = b
			doors = append(doors, d)
		}
	}
	c.firstKnocks(doors)
	c.knockOrOpen(doors)
	c.spaPorts(doors)
	c.totpRanges(doors)
	for _, d := range doors {
		p.Doors = append(p.Doors, d.door)
	}
	return p
}

func (c *compiler) gate(b *hcl.Block, p *Policy) {
	var raw rawGate
	c.diags = append(c.diags, gohcl.DecodeBody(b.Body, nil, &raw)...)
	if present(raw.Queue) {
		if n, ok := c.whole(raw.Queue, 0, math.MaxUint16,
			"NFQUEUE numbers run from 0 to 65535, as iptables' --queue-num takes them."); ok {
			p.Queue = uint16(n)
		}
	}
	if present(raw.Queues) {
		if n, ok := c.whole(raw.Queues, 1, MaxQueues,
			fmt.Sprintf("The gate reads each queue on a thread of its own; from 1 to %d, about one per core.", MaxQueues)); ok {
			if int(p.Queue)+int(n)-1 > math.MaxUint16 {
				c.errorf(raw.Queues.Expr.Range().Ptr(), &raw.Queues.Range,
					"NFQUEUE numbers run from 0 to 65535, as iptables' --queue-balance takes them.",
					"queues %d from queue %d runs past queue 65535", n, p.Queue)
			} else {
				p.Queues = int(n)
			}
		}
	}
	if present(raw.Unprotected) {
		if s, ok := c.str(raw.Unprotected.Expr, &raw.Unprotected.Range, "unprotected"); ok {
			v, err := verdict.ParseVerdict(s)
			if err != nil {
				c.errorf(raw.Unprotected.Expr.Range().Ptr(), &raw.Unprotected.Range,
					"It is the verdict for ports no door names: \"accept\" leaves them open, \"drop\" closes everything but the doors.",
					"invalid unprotected %q", s)
			} else {
				p.Unprotected = v
			}
		}
	}
	capDetail := fmt.Sprintf("The engine allocates its table for this many entries when it starts, some 100 to 200 bytes each; it must be from 1 to %d.", maxCap)
	if present(raw.MaxSources) {
		if n, ok := c.whole(raw.MaxSources, 1, maxCap, capDetail); ok {
			p.MaxSources = int(n)
		}
	}
	if present(raw.MaxGrants) {
		if n, ok := c.whole(raw.MaxGrants, 1, maxCap, capDetail); ok {
			p.MaxGrants = int(n)
		}
	}
	if present(raw.MaxReplay) {
		if n, ok := c.whole(raw.MaxReplay, 1, maxCap, capDetail); ok {
			p.MaxReplay = int(n)
		}
	}
	if present(raw.FailOpen) {
		if v, ok := c.boolean(raw.FailOpen, ""); ok {
			p.FailOpen = v
		}
	}
	if present(raw.AcceptMark) {
		if str, ok := c.str(raw.AcceptMark.Expr, &raw.AcceptMark.Range, "accept_mark"); ok {
			v, m, err := ParseMark(str)
			if err != nil {
				c.errorf(raw.AcceptMark.Expr.Range().Ptr(), &raw.AcceptMark.Range,
					"The mark is value/mask, as iptables writes it, such as \"0x4b470000/0xffff0000\"; the value must lie inside the mask and the mask must not be 0.",
					"invalid accept_mark %q: %v", str, err)
			} else {
				p.AcceptMark, p.AcceptMask = v, m
			}
		}
	}
	if present(raw.StateFile) {
		if s, ok := c.path(raw.StateFile, "state_file",
			"Grants are saved there so they survive a restart; \"\" keeps them in memory only.", true); ok {
			p.StateFile = s
		}
	}
	if present(raw.Control) {
		if s, ok := c.path(raw.Control, "control_socket",
			"knockgate status and revoke reach the daemon through this Unix socket.", false); ok {
			p.ControlSocket = s
		}
	}
}

func (c *compiler) metrics(b *hcl.Block, p *Policy) {
	var raw rawMetrics
	c.diags = append(c.diags, gohcl.DecodeBody(b.Body, nil, &raw)...)
	if !present(raw.Listen) {
		return
	}
	s, ok := c.str(raw.Listen.Expr, &raw.Listen.Range, "listen")
	if !ok {
		return
	}
	if s != "" {
		host, port, err := net.SplitHostPort(s)
		n, perr := strconv.ParseUint(port, 10, 16)
		if err != nil || perr != nil || n == 0 || (host != "" && net.ParseIP(host) == nil && host != "localhost") {
			c.errorf(raw.Listen.Expr.Range().Ptr(), &raw.Listen.Range,
				"The metrics endpoint listens on address:port, such as \"127.0.0.1:8789\" or \"[::1]:8789\"; \"\" turns it off.",
				"invalid metrics listen address %q", s)
			return
		}
	}
	p.MetricsListen = s
}

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

// nestedRange is where door block b's nested block of type typ starts, for
// a diagnostic about that block as a whole: gohcl keeps no block ranges.
func nestedRange(b *hcl.Block, typ string) hcl.Range {
	inner, _, d := b.Body.PartialContent(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: typ}}})
	if d.HasErrors() || len(inner.Blocks) == 0 {
		return b.DefRange
	}
	return inner.Blocks[0].DefRange
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

func (c *compiler) door(b *hcl.Block) *doorSrc {
	name := b.Labels[0]
	d := &doorSrc{door: verdict.Door{Name: name}}
	if name == "" {
		c.errorf(b.LabelRanges[0].Ptr(), b.DefRange.Ptr(),
			"The name labels the door's log lines and metrics.",
			"door name is empty")
	}
	var raw rawDoor
	c.diags = append(c.diags, gohcl.DecodeBody(b.Body, nil, &raw)...)
	if raw.SPA != nil {
		d.door.SPA, d.spaPort = c.spaBlock(name, b, raw.SPA.Body)
	}
	if raw.TOTP != nil {
		d.door.TOTP, d.totpRange = c.totpBlock(name, b, raw.TOTP.Body)
		if present(raw.Sequence) {
			c.errorf(raw.Sequence.Range.Ptr(), nil,
				"A totp block derives the door's sequence from its secret and the time; leave sequence out.",
				"door %q has both a sequence and a totp block", name)
		}
	}
	if present(raw.MaxConnections) {
		if n, ok := c.whole(raw.MaxConnections, 1, 1_000_000,
			"The grant ends once it has admitted this many new connections, from 1 to 1000000; leave it out for no limit."); ok {
			d.door.MaxConnections = int(n)
		}
	}

	if !present(raw.Sequence) && raw.SPA == nil && raw.TOTP == nil {
		c.errorf(b.DefRange.Ptr(), nil,
			`A door opens for a sequence of knocks, such as sequence = ["tcp/7000", "udp/8000", "tcp/9000"], or for a totp or spa block.`,
			"door %q has no sequence", name)
	} else if !present(raw.Sequence) || raw.TOTP != nil {
		// An SPA or TOTP door needs no sequence.
	} else if d.seq = c.nonEmpty(name, raw.Sequence, "sequence",
		"A door with no knocks would open for anyone; list at least one knock."); d.seq != nil {
		c.notTooLong(name, d.seq)
	}
	d.door.SequenceTimeout = c.duration(fmt.Sprintf("door %q", name), raw.SequenceTimeout, DefaultSequenceTimeout)

	if present(raw.CloseSequence) {
		// An empty close_sequence means none, as leaving it out does: an
		// empty list cannot be knocked, so there is nothing to refuse.
		if l, ok := c.ports(name, raw.CloseSequence); ok && len(l.ports) > 0 {
			d.closeSeq = l
			c.notTooLong(name, l)
		}
	}
	if d.seq != nil && d.closeSeq != nil && slices.Equal(d.seq.ports, d.closeSeq.ports) {
		d.closeIsSeq = true
		c.errorf(raw.CloseSequence.Expr.Range().Ptr(), &raw.CloseSequence.Range,
			"The engine could not tell whether a source means to open the door or close it; choose a close_sequence that starts with another knock.",
			"door %q close_sequence is the same as its sequence", name)
	}

	if !present(raw.Open) {
		c.errorf(b.DefRange.Ptr(), nil,
			`A door opens protected ports for a source that knocks, such as open = ["tcp/22"].`,
			"door %q has no open list", name)
	} else if d.open = c.nonEmpty(name, raw.Open, "open list",
		"A door that opens nothing protects nothing; list the ports it opens."); d.open != nil {
		c.noDuplicates(name, d.open)
		if len(d.open.ports) > verdict.MaxOpenPorts {
			c.errorf(raw.Open.Expr.Range().Ptr(), &raw.Open.Range,
				fmt.Sprintf("A grant records the ports it covers in 64 bits, so a door opens at most %d; split the rest into another door.", verdict.MaxOpenPorts),
				"door %q opens %d ports", name, len(d.open.ports))
		}
	}
	d.door.OpenFor = c.duration(fmt.Sprintf("door %q", name), raw.OpenFor, DefaultOpenFor)

	if present(raw.AllowFrom) {
		d.door.AllowFrom = c.prefixes(name, raw.AllowFrom)
	}

	if d.seq != nil {
		d.door.Sequence = d.seq.ports
	}
	if d.closeSeq != nil {
		d.door.CloseSequence = d.closeSeq.ports
	}
	if d.open != nil {
		d.door.Open = d.open.ports
	}
	return d
}

// nonEmpty parses a port list that must name at least one port, what in
// the summary; nil when it is invalid or empty (reported), so the checks
// across doors skip it.
func (c *compiler) nonEmpty(door string, attr *hcl.Attribute, what, detail string) *portList {
	l, ok := c.ports(door, attr)
	if !ok {
		return nil
	}
	if len(l.ports) == 0 {
		c.errorf(attr.Expr.Range().Ptr(), &attr.Range, detail, "door %q has an empty %s", door, what)
		return nil
	}
	return l
}

// maxKnocks is the longest sequence the engine takes: it counts a source's
// progress in a uint16.
const maxKnocks = math.MaxUint16

func (c *compiler) notTooLong(door string, l *portList) {
	if len(l.ports) > maxKnocks {
		c.errorf(l.attr.Expr.Range().Ptr(), &l.attr.Range,
			fmt.Sprintf("The engine counts knocks in 16 bits, so a sequence has at most %d.", maxKnocks),
			"door %q %s has %d knocks", door, l.attr.Name, len(l.ports))
	}
}

func (c *compiler) noDuplicates(door string, l *portList) {
	seen := map[verdict.Port]int{}
	for i, p := range l.ports {
		if j, ok := seen[p]; ok {
			c.errorf(l.elems[i].Ptr(), &l.attr.Range,
				fmt.Sprintf("It is already listed at %s.", pos(l.elems[j])),
				"door %q opens %s twice", door, p)
			continue
		}
		seen[p] = i
	}
}

// firstKnocks refuses two sequences that start with the same port. The
// engine starts tracking a source's sequence by looking up its first knock,
// so a shared first knock would leave it guessing which door is meant.
func (c *compiler) firstKnocks(doors []*doorSrc) {
	type seqRef struct {
		door string
		l    *portList
	}
	var seqs []seqRef
	for _, d := range doors {
		if d.seq != nil {
			seqs = append(seqs, seqRef{d.door.Name, d.seq})
		}
		if d.closeSeq != nil && !d.closeIsSeq {
			seqs = append(seqs, seqRef{d.door.Name, d.closeSeq})
		}
	}
	// Report the later of two clashing sequences, as a compiler reports the
	// second definition of a name.
	slices.SortStableFunc(seqs, func(a, b seqRef) int { return a.l.elems[0].Start.Byte - b.l.elems[0].Start.Byte })
	first := map[verdict.Port]seqRef{}
	for _, s := range seqs {
		p := s.l.ports[0]
		prev, ok := first[p]
		if !ok {
			first[p] = s
			continue
		}
		c.errorf(s.l.elems[0].Ptr(), &s.l.attr.Range,
			fmt.Sprintf("Door %q %s already starts with %s at %s. The engine tells which sequence a source has begun by its first knock, so no two sequences or close_sequences may start with the same port.",
				prev.door, prev.l.attr.Name, p, pos(prev.l.elems[0])),
			"door %q %s starts with %s, as door %q %s does", s.door, s.l.attr.Name, p, prev.door, prev.l.attr.Name)
	}
}

// knockOrOpen refuses a port that is both knocked on and protected: the
// engine drops a knock and counts it, while it passes a packet to a
// protected port for a source with a grant, so it could not do both.
func (c *compiler) knockOrOpen(doors []*doorSrc) {
	type use struct {
		door string
		l    *portList
		i    int
	}
	var uses []use
	for _, d := range doors {
		for _, l := range []*portList{d.seq, d.closeSeq, d.open} {
			if l == nil {
				continue
			}
			for i := range l.ports {
				uses = append(uses, use{d.door.Name, l, i})
			}
		}
	}
	slices.SortStableFunc(uses, func(a, b use) int { return a.l.elems[a.i].Start.Byte - b.l.elems[b.i].Start.Byte })
	role := func(u use) string {
		if u.l.attr.Name == "open" {
			return fmt.Sprintf("door %q opens it", u.door)
		}
		return fmt.Sprintf("door %q %s knocks on it", u.door, u.l.attr.Name)
	}
	knocks := map[verdict.Port]use{}
	opens := map[verdict.Port]use{}
	for _, u := range uses {
		p := u.l.ports[u.i]
		mine, theirs := knocks, opens
		if u.l.attr.Name == "open" {
			mine, theirs = opens, knocks
		}
		if other, ok := theirs[p]; ok {
			c.errorf(u.l.elems[u.i].Ptr(), &u.l.attr.Range,
				fmt.Sprintf("Here %s, but %s at %s. A knock is dropped and counted while a protected port passes for a source with a grant, so one port cannot be both; knock on ports nothing else uses.",
					role(u), role(other), pos(other.l.elems[other.i])),
				"%s is both a knock and a protected port", p)
		}
		if _, ok := mine[p]; !ok {
			mine[p] = u
		}
	}
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

// duration reads a duration setting of owner (`door "ssh"`, `penalty`),
// falling back to def when it is unset or invalid (an invalid one has been
// reported).
func (c *compiler) duration(owner string, attr *hcl.Attribute, def time.Duration) time.Duration {
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
