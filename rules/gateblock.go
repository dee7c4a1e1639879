package rules

import (
	"fmt"
	"math"
	"net"
	"strconv"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/knockgate/knockgate/verdict"
)

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
			c.stateFile = raw.StateFile
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
