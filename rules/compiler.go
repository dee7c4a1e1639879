package rules

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"

	"github.com/knockgate/knockgate/verdict"
)

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
	// named lists the files the policy names (itself, keys and secret
	// files), which the state file must not be; stateFile is where the
	// policy sets the state file, if it does.
	named     []namedFile
	stateFile *hcl.Attribute
	// clusterListen is the cluster block's listen, once valid.
	clusterListen *hcl.Attribute
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
	}{"gate": {read: c.gate}, "metrics": {read: c.metrics}, "penalty": {read: c.penalty}, "cluster": {read: c.cluster}}
	named := map[string]*hcl.Block{}
	var doors []*doorSrc
	for _, b := range content.Blocks {
		switch b.Type {
		case "gate", "metrics", "penalty", "cluster":
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
	c.clusterPort(p, doors)
	for _, d := range doors {
		p.Doors = append(p.Doors, d.door)
	}
	c.stateFileNamed(p.StateFile, c.stateFile)
	p.named = c.named
	return p
}
