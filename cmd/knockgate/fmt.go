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
	"github.com/knockgate/knockgate/internal/unidiff"
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
			io.WriteString(stdout, unidiff.Unified(name, name, src, out))
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
				io.WriteString(stdout, unidiff.Unified(path+".orig", path, src, out))
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
		io.WriteString(stdout, unidiff.Unified(path+".orig", path, src, out))
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
