package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2/hclwrite"

	"github.com/knockgate/knockgate/internal/atomicfile"
	"github.com/knockgate/knockgate/rules"
)

// Exit statuses of fmt, as terraform fmt has them: 1 for a file that could
// not be read, parsed or written, 3 when -check finds work to do (2 stays
// the usage status of every command).
const (
	fmtExitError     = 1
	fmtExitUnchecked = 3
)

const fmtAbout = `Rewrite HCL policy files in the canonical layout, the way terraform fmt
and packer fmt do: two-space indents, aligned equals signs, normalised
spacing. Comments and the order of everything are kept.

With no arguments fmt formats the *.hcl files of the current directory. A
DIR stands for its *.hcl files (with -recursive, those of its subdirectories
too; hidden files and directories are skipped). A FILE named on the command
line is formatted whatever its name. "-" reads standard input and writes the
formatted text to standard output.

By default files are rewritten in place and the name of each file changed is
printed. Writes are atomic (a temporary file in the same directory renamed
over the original) and keep the file's mode, so a running daemon never
reads half a policy. A file with a syntax error is reported with
file:line:col and the source line, and is never rewritten.

Exit status: 0 on success, 1 if a file could not be read, parsed or
written, 2 for bad usage, 3 if -check found files that need formatting.

Examples:
  knockgate fmt                             format ./*.hcl in place
  knockgate fmt /etc/knockgate/policy.hcl   format one policy in place
  knockgate fmt -check -diff -recursive .   in CI: show changes, exit 3 if any
  knockgate fmt -w=false policy.hcl         print the formatted policy
  knockgate fmt -diff -w=false policy.hcl   show what would change
  knockgate fmt - < in.hcl > out.hcl        filter standard input`

func cmdFmt(args []string, stdout, stderr io.Writer) error {
	return runFmt(args, os.Stdin, stdout, stderr)
}

// fmtOptions are fmt's flags after -check has had its say.
type fmtOptions struct {
	check, write, diff, recursive bool
}

// runFmt is cmdFmt with standard input passed in, so tests can feed "-".
func runFmt(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("fmt", "[-check] [-w] [-diff] [-recursive] [FILE|DIR|- ...]", fmtAbout, stdout, stderr)
	check := fs.Bool("check", false, "write nothing; list the files that need formatting and exit 3 if there are any")
	write := fs.Bool("w", true, "rewrite files in place and list those changed; -w=false prints the formatted text instead")
	diff := fs.Bool("diff", false, "print a unified diff of the changes")
	recursive := fs.Bool("recursive", false, "also format the *.hcl files in subdirectories of each DIR")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opt := fmtOptions{check: *check, write: *write && !*check, diff: *diff, recursive: *recursive}
	paths := fs.Args()

	if slices.Contains(paths, "-") {
		if len(paths) != 1 {
			fmt.Fprintf(stderr, "knockgate fmt: \"-\" (standard input) must be the only argument\n")
			return errUsage
		}
		return fmtStdin(stdin, stdout, stderr, opt)
	}
	if len(paths) == 0 {
		paths = []string{"."}
	}

	var failed, unformatted bool
	for _, p := range paths {
		files, err := fmtTargets(p, opt.recursive)
		if err != nil {
			fmt.Fprintf(stderr, "knockgate fmt: %v\n", err)
			failed = true
			// A directory that breaks part way through still has the
			// files found before the break formatted.
		}
		for _, f := range files {
			changed, err := fmtFile(f, stdout, stderr, opt)
			if err != nil {
				if !errors.Is(err, errReported) {
					fmt.Fprintf(stderr, "knockgate fmt: %v\n", err)
				}
				failed = true
			}
			unformatted = unformatted || changed
		}
	}
	return fmtStatus(failed, opt.check && unformatted)
}

// fmtStatus picks the exit status: errors win over -check's findings, as in
// terraform, because a file that does not parse was not checked at all.
func fmtStatus(failed, unformatted bool) error {
	switch {
	case failed:
		return exitError{fmtExitError}
	case unformatted:
		return exitError{fmtExitUnchecked}
	}
	return nil
}

// errReported marks an error whose diagnostics are already on stderr.
var errReported = errors.New("reported")

func fmtStdin(stdin io.Reader, stdout, stderr io.Writer, opt fmtOptions) error {
	src, err := io.ReadAll(stdin)
	if err != nil {
		fmt.Fprintf(stderr, "knockgate fmt: failed to read standard input: %v\n", err)
		return exitError{fmtExitError}
	}
	const name = "<stdin>"
	out, err := formatHCL(src, name, stderr)
	if err != nil {
		return exitError{fmtExitError}
	}
	changed := !bytes.Equal(src, out)
	switch {
	case opt.diff:
		if changed {
			io.WriteString(stdout, unifiedDiff(name, name, src, out))
		}
	case !opt.check:
		stdout.Write(out)
	}
	return fmtStatus(false, opt.check && changed)
}

// fmtTargets expands one command-line argument into the files to format:
// a file is itself, a directory its *.hcl files.
func fmtTargets(path string, recursive bool) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return []string{path}, nil
	}
	var files []string
	if !recursive {
		entries, err := os.ReadDir(path)
		for _, e := range entries {
			if isPolicyFile(e) {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
		return files, err
	}
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != path && strings.HasPrefix(d.Name(), ".") {
				// .git and friends hold no policies of ours.
				return filepath.SkipDir
			}
			return nil
		}
		if isPolicyFile(d) {
			files = append(files, p)
		}
		return nil
	})
	return files, err
}

// isPolicyFile is true for a visible *.hcl entry that is not a directory.
// Symlinks are followed when the file is read (and written, see
// writeAtomic); WalkDir does not descend into linked directories.
func isPolicyFile(e fs.DirEntry) bool {
	name := e.Name()
	return !e.IsDir() && !strings.HasPrefix(name, ".") && filepath.Ext(name) == ".hcl"
}

// fmtFile formats one file as opt says and reports whether it needed
// formatting.
func fmtFile(path string, stdout, stderr io.Writer, opt fmtOptions) (bool, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	out, err := formatHCL(src, path, stderr)
	if err != nil {
		return false, err
	}
	changed := !bytes.Equal(src, out)
	if !opt.check && !opt.write {
		// -w=false: the formatted text is the output, or the diff when
		// that is what was asked for.
		if opt.diff {
			if changed {
				io.WriteString(stdout, unifiedDiff(path+".orig", path, src, out))
			}
		} else {
			stdout.Write(out)
		}
		return changed, nil
	}
	if !changed {
		return false, nil
	}
	if opt.write {
		if err := writeAtomic(path, out); err != nil {
			return true, err
		}
	}
	fmt.Fprintln(stdout, path)
	if opt.diff {
		io.WriteString(stdout, unifiedDiff(path+".orig", path, src, out))
	}
	return true, nil
}

// formatHCL returns src in canonical layout. hclwrite.Format works on
// tokens and happily "formats" a broken file, so the file is parsed first
// and, if it has syntax errors, they are printed the way validate prints
// them and errReported returned.
func formatHCL(src []byte, filename string, stderr io.Writer) ([]byte, error) {
	var rerr *rules.Error
	if err := rules.CheckSyntax(src, filename); errors.As(err, &rerr) {
		if err := printPolicyError(stderr, rerr); err != nil {
			return nil, err
		}
		return nil, errReported
	}
	return hclwrite.Format(src), nil
}

// writeAtomic replaces path with data through atomicfile, so a reader
// (the daemon reloading its policy) sees the old file or the new one,
// never a mix. The mode, and when permitted the owner, of the original
// are kept. A symlink is resolved first so that the file it points to is
// replaced, not the link.
func writeAtomic(path string, data []byte) error {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	fi, err := os.Stat(real)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("failed to write %s: not a regular file", path)
	}
	return atomicfile.Replace(real, data, fi)
}

// unifiedDiff returns a unified diff (3 lines of context) that turns a into
// b, with oldName and newName in the ---/+++ headers, or "" if they are
// equal. The names follow gofmt -d: "x.hcl.orig" and "x.hcl", which
// `patch -p0` applies to x.hcl.
func unifiedDiff(oldName, newName string, a, b []byte) string {
	if bytes.Equal(a, b) {
		return ""
	}
	const context = 3
	al, bl := splitLines(a), splitLines(b)
	ops := diffLines(al, bl)

	var out strings.Builder
	fmt.Fprintf(&out, "--- %s\n+++ %s\n", oldName, newName)
	for i := 0; i < len(ops); {
		// Find the next change, then extend the hunk while the following
		// change is close enough for the two contexts to touch.
		for i < len(ops) && ops[i].kind == ' ' {
			i++
		}
		if i == len(ops) {
			break
		}
		start := max(0, i-context)
		end := i
		for {
			for end < len(ops) && ops[end].kind != ' ' {
				end++
			}
			next := end
			for next < len(ops) && ops[next].kind == ' ' {
				next++
			}
			if next == len(ops) || next-end > 2*context {
				end = min(len(ops), end+context)
				break
			}
			end = next
		}
		var na, nb int
		for _, op := range ops[start:end] {
			if op.kind != '+' {
				na++
			}
			if op.kind != '-' {
				nb++
			}
		}
		fmt.Fprintf(&out, "@@ -%s +%s @@\n", hunkRange(ops[start].a, na), hunkRange(ops[start].b, nb))
		for _, op := range ops[start:end] {
			line := op.line
			out.WriteByte(op.kind)
			out.WriteString(line)
			if !strings.HasSuffix(line, "\n") {
				out.WriteString("\n\\ No newline at end of file\n")
			}
		}
		i = end
	}
	return out.String()
}

// hunkRange formats one side of a hunk header: start is the 0-based index of
// the hunk's first line on that side. An empty side names the line before
// it, and a count of 1 is left out, as GNU diff does.
func hunkRange(start, n int) string {
	switch n {
	case 0:
		return fmt.Sprintf("%d,0", start)
	case 1:
		return fmt.Sprintf("%d", start+1)
	}
	return fmt.Sprintf("%d,%d", start+1, n)
}

// splitLines splits s after each newline; the last line lacks one if s
// does not end with one. Keeping the newline makes "x" and "x\n" differ.
func splitLines(s []byte) []string {
	var lines []string
	for len(s) > 0 {
		n := bytes.IndexByte(s, '\n') + 1
		if n == 0 {
			n = len(s)
		}
		lines = append(lines, string(s[:n]))
		s = s[n:]
	}
	return lines
}

// diffOp is one line of an edit script: kind ' ' keeps a[a] (== b[b]),
// '-' deletes a[a], '+' inserts b[b]; a and b are always the positions
// on each side at which the op applies.
type diffOp struct {
	kind byte
	a, b int
	line string
}

// diffLines returns a shortest edit script from a to b by Myers' O(ND)
// algorithm ("An O(ND) Difference Algorithm and Its Variations", 1986).
// The common prefix and suffix are trimmed first: a format change usually
// touches a few lines of a file, and D, which bounds time and the trace's
// memory (O(D²)), counts only changed lines.
func diffLines(a, b []string) []diffOp {
	var ops []diffOp
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		ops = append(ops, diffOp{' ', pre, pre, a[pre]})
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	am, bm := a[pre:len(a)-suf], b[pre:len(b)-suf]

	n, m := len(am), len(bm)
	// v[k] is the furthest x reached on diagonal k = x-y; trace[d] is v as
	// it was before step d, holding diagonals -d-1..d+1 at index k+d+1.
	off := n + m + 1
	v := make([]int, 2*off+1)
	var trace [][]int
	for d := 0; d <= n+m; d++ {
		trace = append(trace, append([]int(nil), v[off-d-1:off+d+2]...))
		done := false
		for k := -d; k <= d; k += 2 {
			var x int
			if k == -d || (k != d && v[off+k-1] < v[off+k+1]) {
				x = v[off+k+1] // down: an insertion
			} else {
				x = v[off+k-1] + 1 // right: a deletion
			}
			y := x - k
			for x < n && y < m && am[x] == bm[y] {
				x++
				y++
			}
			v[off+k] = x
			if x >= n && y >= m {
				done = true
				break
			}
		}
		if done {
			break
		}
	}

	// Walk the trace back from (n, m), collecting the middle in reverse.
	var mid []diffOp
	x, y := n, m
	for d := len(trace) - 1; d >= 0; d-- {
		tv := trace[d]
		at := func(k int) int { return tv[k+d+1] }
		k := x - y
		var prevK int
		if k == -d || (k != d && at(k-1) < at(k+1)) {
			prevK = k + 1
		} else {
			prevK = k - 1
		}
		prevX := at(prevK)
		prevY := prevX - prevK
		for x > prevX && y > prevY {
			x--
			y--
			mid = append(mid, diffOp{' ', pre + x, pre + y, am[x]})
		}
		if d > 0 {
			if x == prevX {
				mid = append(mid, diffOp{'+', pre + x, pre + prevY, bm[prevY]})
			} else {
				mid = append(mid, diffOp{'-', pre + prevX, pre + y, am[prevX]})
			}
		}
		x, y = prevX, prevY
	}
	for i := len(mid) - 1; i >= 0; i-- {
		ops = append(ops, mid[i])
	}
	for i := 0; i < suf; i++ {
		ops = append(ops, diffOp{' ', pre + n + i, pre + m + i, a[pre+n+i]})
	}
	return ops
}
