package rules

import (
	"os"
	"path/filepath"

	"github.com/hashicorp/hcl/v2"
)

// namedFile is a file the policy names, which the daemon must never write:
// the policy itself, a door's keys_file or secret_file.
type namedFile struct {
	path string // absolute and clean
	what string // "the policy file itself", `the keys_file of door "nas"`
}

// absolute makes path absolute and clean, as the daemon sees it; a path
// that cannot be made absolute (no working directory) is kept as it is.
func absolute(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return filepath.Clean(path)
}

// nameFile records that the policy names path, as what.
func (c *compiler) nameFile(path, what string) {
	c.named = append(c.named, namedFile{path: absolute(path), what: what})
}

// stateFileNamed refuses a state file that is a file the policy names: the
// daemon sets a state file it cannot read aside as corrupt and writes JSON
// in its place, which would destroy a keys file at start and the policy
// at the next save. Paths are compared absolute and clean, and as files
// when both exist, so a symlink or hard link to one is caught too.
func (c *compiler) stateFileNamed(state string, at *hcl.Attribute) {
	if state == "" || at == nil {
		return
	}
	state = absolute(state)
	stateInfo, stateErr := os.Stat(state)
	for _, f := range c.named {
		same := f.path == state
		if !same && stateErr == nil {
			info, err := os.Stat(f.path)
			same = err == nil && os.SameFile(stateInfo, info)
		}
		if same {
			c.errorf(at.Expr.Range().Ptr(), &at.Range,
				"The daemon writes its grants there, and would overwrite that file or set it aside as corrupt; choose a path of its own, such as "+DefaultStateFile+".",
				"state_file %q is %s", state, f.what)
			return
		}
	}
}

// ProtectedFiles lists the files the policy names, absolute: the policy
// file, and every keys_file and secret_file. The daemon must never rename
// or overwrite them (validate refuses a state_file among them).
func (p *Policy) ProtectedFiles() []string {
	var out []string
	for _, f := range p.named {
		out = append(out, f.path)
	}
	return out
}

// policyFile is the namedFile of the policy file itself.
func policyFile(filename string) namedFile {
	return namedFile{path: absolute(filename), what: "the policy file itself"}
}
