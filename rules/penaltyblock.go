package rules

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
)

func (c *compiler) penalty(b *hcl.Block, p *Policy) {
	var raw rawPenalty
	c.diags = append(c.diags, gohcl.DecodeBody(b.Body, nil, &raw)...)
	pen := &p.Penalty
	if present(raw.Failures) {
		if n, ok := c.whole(raw.Failures, 0, 1_000_000, "Failures within the window that put a source in the box, from 0 to 1000000; 0 turns the box off."); ok {
			pen.Failures = int(n)
		}
	}
	pen.Within = c.duration("penalty", raw.Within, pen.Within, maxPenaltyWithin)
	pen.Ban = c.duration("penalty", raw.Ban, pen.Ban, maxPenaltyBan)
	if present(raw.MaxSources) {
		if n, ok := c.whole(raw.MaxSources, 1, maxCap,
			fmt.Sprintf("The box's own table, allocated at start, holds this many sources, from 1 to %d.", maxCap)); ok {
			pen.MaxSources = int(n)
		}
	}
}
