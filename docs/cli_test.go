package docs

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// bin is the knockgate binary TestMain builds, so that the lists below come
// from the program itself, not from a copy of its help.
var bin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "kgdocs-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "knockgate")
		if out, err := exec.Command("go", "build", "-o", bin, "../cmd/knockgate").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "failed to build knockgate: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}())
}

// help runs knockgate with args and returns what it printed, stdout and
// stderr together (--help may go to either).
func help(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("knockgate %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// commands lists the commands `knockgate help` prints, in its order.
func commands(t *testing.T) []string {
	t.Helper()
	out := help(t, "help")
	_, list, ok := strings.Cut(out, "\nCommands:\n")
	if !ok {
		t.Fatalf("knockgate help has no Commands: section:\n%s", out)
	}
	var cmds []string
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if !strings.HasPrefix(line, "  ") || len(f) == 0 {
			break
		}
		cmds = append(cmds, f[0])
	}
	if len(cmds) < 10 {
		t.Fatalf("read %d commands from knockgate help, want the full list:\n%s", len(cmds), out)
	}
	return cmds
}

var flagLine = regexp.MustCompile(`(?m)^  -([A-Za-z0-9][A-Za-z0-9-]*)`)

// flags lists the flags `knockgate CMD --help` prints, without dashes.
func flags(t *testing.T, cmd string) []string {
	t.Helper()
	var names []string
	for _, m := range flagLine.FindAllStringSubmatch(help(t, cmd, "--help"), -1) {
		names = append(names, m[1])
	}
	return names
}

// offered reports whether list holds flag as -flag or --flag.
func offered(list []string, flag string) bool {
	return slices.Contains(list, "-"+flag) || slices.Contains(list, "--"+flag)
}

// checkCompletion checks one shell's answers: top holds what it offers for
// the first word, perCmd(cmd) what it offers after `knockgate cmd -`.
func checkCompletion(t *testing.T, top []string, perCmd func(string) []string) {
	for _, cmd := range commands(t) {
		if !slices.Contains(top, cmd) {
			t.Errorf("command %s is not offered (offered: %v)", cmd, top)
			continue
		}
		got := perCmd(cmd)
		for _, f := range flags(t, cmd) {
			if !offered(got, f) {
				t.Errorf("knockgate %s: flag -%s is not offered (offered: %v)", cmd, f, got)
			}
		}
		if !offered(got, "help") {
			t.Errorf("knockgate %s: --help is not offered (offered: %v)", cmd, got)
		}
	}
}

// TestBashCompletion runs the completion function as bash would on
// `knockgate <TAB>` and `knockgate CMD -<TAB>`.
func TestBashCompletion(t *testing.T) {
	run := func(words ...string) []string {
		t.Helper()
		script := fmt.Sprintf(`source ../contrib/completion/knockgate.bash
COMP_WORDS=(%s); COMP_CWORD=%d; _knockgate; printf '%%s\n' "${COMPREPLY[@]}"`,
			strings.Join(words, " "), len(words)-1)
		out, err := exec.Command("bash", "--norc", "--noprofile", "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("bash completion of %q: %v\n%s", words, err, out)
		}
		return strings.Fields(string(out))
	}
	top := run("knockgate", "''")
	checkCompletion(t, top, func(cmd string) []string { return run("knockgate", cmd, "-") })
	if got := run("knockgate", "run", "--log-level", "''"); !slices.Equal(got, []string{"debug", "info", "warn", "error"}) {
		t.Errorf("knockgate run --log-level <TAB> offers %v", got)
	}
	if got := run("knockgate", "knock", "--config", "../contrib/examples/minimal.hcl", "--door", "''"); !slices.Equal(got, []string{"ssh"}) {
		t.Errorf("knockgate knock --config minimal.hcl --door <TAB> offers %v, want the policy's door ssh", got)
	}
}

var zshSpec = regexp.MustCompile(`^(?:\*|\([^)]*\))?(--?[A-Za-z0-9][A-Za-z0-9-]*)`)

// TestZshCompletion loads _knockgate in zsh with _arguments and _describe
// replaced by functions that print what they are given: the commands, and
// each command's option specs.
func TestZshCompletion(t *testing.T) {
	if _, err := exec.LookPath("zsh"); err != nil {
		t.Skip("zsh is not installed (.ci/run installs it)")
	}
	run := func(state string, words ...string) []string {
		t.Helper()
		script := fmt.Sprintf(`
_arguments() { if [[ $1 == -C ]]; then state=%s; return 0; fi; print -rl -- "$@" }
_describe() { local -a list; list=("${(@P)${@[-1]}}"); print -rl -- "${list[@]%%%%:*}" }
words=(%s)
source ../contrib/completion/_knockgate`, state, strings.Join(words, " "))
		out, err := exec.Command("zsh", "-f", "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("zsh completion of %q: %v\n%s", words, err, out)
		}
		var got []string
		for _, line := range strings.Split(string(out), "\n") {
			if m := zshSpec.FindStringSubmatch(line); m != nil {
				got = append(got, m[1])
			} else if line != "" {
				got = append(got, line)
			}
		}
		return got
	}
	top := run("command", "knockgate")
	checkCompletion(t, top, func(cmd string) []string { return run("argument", cmd) })
}

// section returns the text of a man page from the heading line to the
// next heading of the same or a higher level.
func section(page, heading string) (string, bool) {
	level := strings.Count(strings.Fields(heading)[0], "#")
	_, rest, ok := strings.Cut(page, "\n"+heading+"\n")
	if !ok {
		return "", false
	}
	for _, line := range strings.Split(rest, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.Trim(f[0], "#") == "" && len(f[0]) <= level {
			rest, _, _ = strings.Cut(rest, "\n"+line+"\n")
			break
		}
	}
	return rest, true
}

func TestManPageCommands(t *testing.T) {
	src, err := os.ReadFile("knockgate.8.md")
	if err != nil {
		t.Fatal(err)
	}
	page := string(src)
	for _, cmd := range commands(t) {
		if !strings.Contains(page, "**knockgate "+cmd+"**") {
			t.Errorf("knockgate.8.md: the SYNOPSIS has no **knockgate %s**", cmd)
		}
		text, ok := section(page, "## "+cmd)
		if !ok {
			t.Errorf("knockgate.8.md has no \"## %s\" section under COMMANDS", cmd)
			continue
		}
		for _, f := range flags(t, cmd) {
			if !strings.Contains(text, "**--"+f+"**") && !strings.Contains(text, "**-"+f+"**") {
				t.Errorf("knockgate.8.md: section %s does not describe -%s", cmd, f)
			}
		}
	}
}

var setting = regexp.MustCompile(`(?m)^\s*#?\s*([a-z][a-z0-9_]*)\s*(?:=|"[^"]*"\s*\{|\{)`)

// TestManPageSettings checks that knockgate.hcl(5) names every block and
// setting of the reference policy, whose own tests keep it complete.
func TestManPageSettings(t *testing.T) {
	ref, err := os.ReadFile("../contrib/examples/reference.hcl")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("knockgate.hcl.5.md")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, m := range setting.FindAllSubmatch(ref, -1) {
		n++
		if name := string(m[1]); !bytes.Contains(src, []byte("**"+name+"**")) {
			t.Errorf("knockgate.hcl.5.md does not describe %s (in reference.hcl)", name)
		}
	}
	if n < 30 {
		t.Fatalf("read %d settings from reference.hcl, want them all", n)
	}
}
