package rules

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2/hclparse"

	"github.com/knockgate/knockgate/verdict"
)

// Policy is a checked policy: what the engine enforces and where the gate
// listens.
type Policy struct {
	verdict.Policy
	// Queue is the NFQUEUE number the gate binds, the one the firewall's
	// NFQUEUE rule names with --queue-num.
	Queue uint16
	// Queues is how many queues the gate serves, numbered from Queue: the
	// firewall spreads new connections over them with --queue-balance
	// Queue:Queue+Queues-1, and the gate reads each on a thread of its own.
	Queues int
	// File is the path the policy was loaded from, or the name given to
	// Parse.
	File string
	// StateFile is where grants are saved to survive restarts; empty keeps
	// them in memory only.
	StateFile string
	// ControlSocket is the Unix socket for knockgate status, revoke and
	// reload.
	ControlSocket string
	// MetricsListen is the address of the Prometheus endpoint; empty turns
	// it off.
	MetricsListen string
	// FailOpen chooses availability of the unprotected ports over the gate
	// itself: while the daemon is down or the queue overflows, packets
	// bypass the queue, and only the protected ports stay closed, by a
	// static rule that drops NEW connections to them unless the gate
	// marked them with AcceptMark.
	FailOpen bool
	// AcceptMark/AcceptMask is the packet mark the gate sets on what it
	// accepts (within the mask, keeping the mark's other bits).
	AcceptMark, AcceptMask uint32
	// Cluster, when set, makes this gateway one of several that share
	// their state (clusterblock.go); nil is a single gateway.
	Cluster *Cluster
	// named is what ProtectedFiles reports.
	named []namedFile
}

// Defaults of the accept mark: "KG" in the upper half, leaving the lower
// bits, which other tools use most, alone.
const (
	DefaultAcceptMark = 0x4b470000
	DefaultAcceptMask = 0xffff0000
)

// ParseMark parses "value/mask" or "value" (mask all ones), in hex or
// decimal, as iptables' --mark takes it.
func ParseMark(s string) (value, mask uint32, err error) {
	vs, ms, hasMask := strings.Cut(s, "/")
	v, err := strconv.ParseUint(vs, 0, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("value %q is not a 32-bit number", vs)
	}
	m := uint64(0xffffffff)
	if hasMask {
		if m, err = strconv.ParseUint(ms, 0, 32); err != nil {
			return 0, 0, fmt.Errorf("mask %q is not a 32-bit number", ms)
		}
	}
	if m == 0 || v&^m != 0 || v == 0 {
		return 0, 0, fmt.Errorf("the value must be non-zero and inside the mask")
	}
	return uint32(v), uint32(m), nil
}

// Defaults for what a policy leaves out.
const (
	DefaultQueue  = 0
	DefaultQueues = 1
	// MaxQueues caps gate { queues }: a reader per queue beyond one per
	// core only adds threads.
	MaxQueues              = 64
	DefaultUnprotected     = verdict.Accept
	DefaultSequenceTimeout = 10 * time.Second
	DefaultOpenFor         = 30 * time.Second
	DefaultStateFile       = "/var/lib/knockgate/state.json"
	DefaultControlSocket   = "/run/knockgate/knockgate.sock"
	// DefaultMetricsListen is on loopback, so metrics are never exposed
	// by accident, and outside the 9100-9999 range where Prometheus
	// exporters crowd.
	DefaultMetricsListen = "127.0.0.1:8789"
)

// Load reads and checks the policy file at path. A file that cannot be read
// gives a plain error; a file that can be read but is not a valid policy
// gives an *Error.
func Load(path string) (*Policy, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read policy %s: %w", path, err)
	}
	return Parse(src, path)
}

// Parse checks policy source. filename names the source in diagnostics and
// becomes Policy.File. An invalid policy gives an *Error that lists every
// problem found.
func Parse(src []byte, filename string) (*Policy, error) {
	parser := hclparse.NewParser()
	file, diags := parser.ParseHCL(src, filename)
	if diags.HasErrors() {
		return nil, newError(diags, parser.Files())
	}
	c := compiler{src: src, dir: filepath.Dir(filename)}
	if filename != "" {
		c.named = []namedFile{policyFile(filename)}
	}
	p := c.compile(file.Body)
	diags = append(diags, c.diags...)
	if diags.HasErrors() {
		return nil, newError(diags, parser.Files())
	}
	p.File = filename
	return p, nil
}

// CheckSyntax reports the HCL syntax errors of src, as an *Error, without
// reading it as a policy: for tools that rewrite a file's layout and must
// not touch one that is broken.
func CheckSyntax(src []byte, filename string) error {
	parser := hclparse.NewParser()
	if _, diags := parser.ParseHCL(src, filename); diags.HasErrors() {
		return newError(diags, parser.Files())
	}
	return nil
}

// ErrNoDoor is a policy without a door. It is valid, and Load returns it
// (a 0-byte file is one): every queued packet then gets the unprotected
// verdict. But it is most often a file emptied or cut short by mistake,
// so Warnings reports it, and the daemon refuses it on reload, where it
// would otherwise stop protecting every port.
var ErrNoDoor = errors.New("the policy has no door")

// Warnings lists what is valid in p but most likely a mistake, for the
// daemon to log at start and validate to print; errors.Is tells them
// apart (ErrNoDoor).
func (p *Policy) Warnings() []error {
	var ws []error
	if len(p.Doors) == 0 {
		ws = append(ws, fmt.Errorf("%s: %w: every queued packet gets the unprotected verdict (%v)", p.File, ErrNoDoor, p.Unprotected))
	}
	return ws
}
