package rules

import (
	"fmt"
	"math"
	"slices"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/knockgate/knockgate/verdict"
)

// nestedRange is where door block b's nested block of type typ starts, for
// a diagnostic about that block as a whole: gohcl keeps no block ranges.
func nestedRange(b *hcl.Block, typ string) hcl.Range {
	inner, _, d := b.Body.PartialContent(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: typ}}})
	if d.HasErrors() || len(inner.Blocks) == 0 {
		return b.DefRange
	}
	return inner.Blocks[0].DefRange
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
	d.door.SequenceTimeout = c.duration(fmt.Sprintf("door %q", name), raw.SequenceTimeout, DefaultSequenceTimeout, maxSequenceTimeout)

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
	d.door.OpenFor = c.duration(fmt.Sprintf("door %q", name), raw.OpenFor, DefaultOpenFor, maxOpenFor)

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
