package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	uglyPolicy = "door \"ssh\" {\nsequence = [\"tcp/7000\", \"udp/8000\"]\n  open = [\"tcp/22\"]\n}\n"
	tidyPolicy = "door \"ssh\" {\n  sequence = [\"tcp/7000\", \"udp/8000\"]\n  open     = [\"tcp/22\"]\n}\n"
	// brokenPolicy has a stray "=" at line 3, column 10.
	brokenPolicy = "# a comment\ndoor \"ssh\" {\n  open = = [\"tcp/22\"]\n}\n"
)

// writeTree creates files (slash-separated names relative to dir) with
// their contents and an mtime an hour ago, so a rewrite shows.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFmt(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		args  []string // "$D" is replaced by the test's directory
		code  int
		// stdout is compared exactly, with "$D" replaced; stderr must
		// contain each of errHas.
		stdout string
		errHas []string
		// changed lists the files whose content must now be tidyPolicy;
		// every other file must be exactly as written, mtime included.
		changed []string
	}{{
		name:    "unformatted file is rewritten and listed",
		files:   map[string]string{"p.hcl": uglyPolicy},
		args:    []string{"$D/p.hcl"},
		stdout:  "$D/p.hcl\n",
		changed: []string{"p.hcl"},
	}, {
		name:  "formatted file is left alone",
		files: map[string]string{"p.hcl": tidyPolicy},
		args:  []string{"$D/p.hcl"},
	}, {
		name:   "check lists the file, exits 3 and writes nothing",
		files:  map[string]string{"a.hcl": tidyPolicy, "p.hcl": uglyPolicy},
		args:   []string{"-check", "$D"},
		code:   3,
		stdout: "$D/p.hcl\n",
	}, {
		name:  "check passes on formatted files",
		files: map[string]string{"a.hcl": tidyPolicy},
		args:  []string{"-check", "$D"},
	}, {
		name:   "check wins over -w",
		files:  map[string]string{"p.hcl": uglyPolicy},
		args:   []string{"-check", "-w", "$D/p.hcl"},
		code:   3,
		stdout: "$D/p.hcl\n",
	}, {
		name:   "w=false prints the formatted text",
		files:  map[string]string{"p.hcl": uglyPolicy},
		args:   []string{"-w=false", "$D/p.hcl"},
		stdout: tidyPolicy,
	}, {
		name:  "diff with check",
		files: map[string]string{"p.hcl": uglyPolicy},
		args:  []string{"-check", "-diff", "$D/p.hcl"},
		code:  3,
		stdout: "$D/p.hcl\n--- $D/p.hcl.orig\n+++ $D/p.hcl\n@@ -1,4 +1,4 @@\n door \"ssh\" {\n" +
			"-sequence = [\"tcp/7000\", \"udp/8000\"]\n-  open = [\"tcp/22\"]\n" +
			"+  sequence = [\"tcp/7000\", \"udp/8000\"]\n+  open     = [\"tcp/22\"]\n }\n",
	}, {
		name:  "diff while writing",
		files: map[string]string{"p.hcl": uglyPolicy},
		args:  []string{"-diff", "$D/p.hcl"},
		stdout: "$D/p.hcl\n--- $D/p.hcl.orig\n+++ $D/p.hcl\n@@ -1,4 +1,4 @@\n door \"ssh\" {\n" +
			"-sequence = [\"tcp/7000\", \"udp/8000\"]\n-  open = [\"tcp/22\"]\n" +
			"+  sequence = [\"tcp/7000\", \"udp/8000\"]\n+  open     = [\"tcp/22\"]\n }\n",
		changed: []string{"p.hcl"},
	}, {
		name:    "syntax error is reported and the file kept",
		files:   map[string]string{"bad.hcl": brokenPolicy, "p.hcl": uglyPolicy},
		args:    []string{"$D/bad.hcl", "$D/p.hcl"},
		code:    1,
		stdout:  "$D/p.hcl\n", // the other file is still formatted
		errHas:  []string{"$D/bad.hcl:3:10: Invalid expression; ", `open = = ["tcp/22"]`, "Error: Invalid expression"},
		changed: []string{"p.hcl"},
	}, {
		name:   "syntax error wins over check",
		files:  map[string]string{"bad.hcl": brokenPolicy, "p.hcl": uglyPolicy},
		args:   []string{"-check", "$D"},
		code:   1,
		stdout: "$D/p.hcl\n",
		errHas: []string{"$D/bad.hcl:3:10: "},
	}, {
		name: "directory without -recursive",
		files: map[string]string{
			"a.hcl": uglyPolicy, "sub/b.hcl": uglyPolicy, "notes.txt": uglyPolicy,
		},
		args:    []string{"$D"},
		stdout:  "$D/a.hcl\n",
		changed: []string{"a.hcl"},
	}, {
		name: "directory with -recursive skips hidden and non-hcl files",
		files: map[string]string{
			"a.hcl": uglyPolicy, "sub/b.hcl": uglyPolicy, "sub/deeper/c.hcl": tidyPolicy,
			"sub/notes.txt": uglyPolicy, ".git/d.hcl": uglyPolicy, ".e.hcl": uglyPolicy,
		},
		args:    []string{"-recursive", "$D"},
		stdout:  "$D/a.hcl\n$D/sub/b.hcl\n",
		changed: []string{"a.hcl", "sub/b.hcl"},
	}, {
		name:    "a named file is formatted whatever its name",
		files:   map[string]string{"policy.conf": uglyPolicy},
		args:    []string{"$D/policy.conf"},
		stdout:  "$D/policy.conf\n",
		changed: []string{"policy.conf"},
	}, {
		name:   "missing file",
		args:   []string{"$D/nope.hcl"},
		code:   1,
		errHas: []string{"knockgate fmt: ", "$D/nope.hcl"},
	}, {
		name:   "stdin must be alone",
		files:  map[string]string{"p.hcl": uglyPolicy},
		args:   []string{"$D/p.hcl", "-"},
		code:   2,
		errHas: []string{`"-" (standard input) must be the only argument`},
	}, {
		name:   "bad flag",
		args:   []string{"-write"},
		code:   2,
		errHas: []string{"flag provided but not defined", "Usage: knockgate fmt"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, tt.files)
			before := snapshot(t, dir)
			sub := func(s string) string { return strings.ReplaceAll(s, "$D", dir) }
			var args []string
			for _, a := range append([]string{"fmt"}, tt.args...) {
				args = append(args, sub(a))
			}

			code, stdout, stderr := runMain(t, args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			if want := sub(tt.stdout); stdout != want {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
			}
			for _, want := range tt.errHas {
				if !strings.Contains(stderr, sub(want)) {
					t.Errorf("stderr lacks %q:\n%s", sub(want), stderr)
				}
			}

			after := snapshot(t, dir)
			for name, b := range before {
				a, ok := after[name]
				switch {
				case !ok:
					t.Errorf("%s is gone", name)
				case containsStr(tt.changed, name):
					if a.content != tidyPolicy {
						t.Errorf("%s not formatted:\n%s", name, a.content)
					}
					if a.mode != b.mode {
						t.Errorf("%s mode %v, want %v kept", name, a.mode, b.mode)
					}
				case a != b:
					t.Errorf("%s changed: %+v, was %+v", name, a, b)
				}
			}
			for name := range after {
				if _, ok := before[name]; !ok {
					t.Errorf("%s left behind", name)
				}
			}
		})
	}
}

type fileState struct {
	content string
	mode    os.FileMode
	mtime   time.Time
}

// snapshot records every file under dir by slash-separated relative name.
func snapshot(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	m := map[string]fileState{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		m[filepath.ToSlash(rel)] = fileState{string(b), fi.Mode(), fi.ModTime()}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// With no arguments fmt formats the current directory's *.hcl files and
// names them relative to it.
func TestFmtCurrentDirectory(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"a.hcl": uglyPolicy, "sub/b.hcl": uglyPolicy})
	t.Chdir(dir)
	code, stdout, stderr := runMain(t, "fmt")
	if code != 0 || stdout != "a.hcl\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if got := snapshot(t, dir); got["a.hcl"].content != tidyPolicy || got["sub/b.hcl"].content != uglyPolicy {
		t.Fatalf("after fmt: %+v", got)
	}
}

// A symlinked policy has its target rewritten and stays a link.
func TestFmtFollowsSymlink(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"real/p.hcl": uglyPolicy})
	link := filepath.Join(dir, "p.hcl")
	if err := os.Symlink(filepath.Join("real", "p.hcl"), link); err != nil {
		t.Skipf("no symlinks: %v", err)
	}
	if code, _, stderr := runMain(t, "fmt", dir); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("link replaced: %v %v", fi, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "real", "p.hcl")); string(b) != tidyPolicy {
		t.Fatalf("target not formatted:\n%s", b)
	}
}

func TestFmtStdin(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		in     string
		code   int
		stdout string
		errHas string
	}{
		{"formats to stdout", []string{"-"}, uglyPolicy, 0, tidyPolicy, ""},
		{"formatted input passes through", []string{"-"}, tidyPolicy, 0, tidyPolicy, ""},
		{"w is ignored", []string{"-w", "-"}, uglyPolicy, 0, tidyPolicy, ""},
		{"check on unformatted input", []string{"-check", "-"}, uglyPolicy, 3, "", ""},
		{"check on formatted input", []string{"-check", "-"}, tidyPolicy, 0, "", ""},
		{"diff", []string{"-diff", "-"}, "a=1\n", 0, "--- <stdin>\n+++ <stdin>\n@@ -1 +1 @@\n-a=1\n+a = 1\n", ""},
		{"syntax error", []string{"-"}, brokenPolicy, 1, "", "<stdin>:3:10: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := runFmt(tt.args, strings.NewReader(tt.in), &stdout, &stderr)
			code := 0
			var ee exitError
			if errors.As(err, &ee) {
				code = ee.code
			} else if err != nil {
				t.Fatalf("error %v", err)
			}
			if code != tt.code || stdout.String() != tt.stdout || !strings.Contains(stderr.String(), tt.errHas) {
				t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s\nwant exit %d, stdout:\n%s\nstderr with %q",
					code, &stdout, &stderr, tt.code, tt.stdout, tt.errHas)
			}
		})
	}
}

// The shipped examples are what users copy; they must already be in the
// layout fmt gives.
func TestFmtExamplesAreFormatted(t *testing.T) {
	examples, err := filepath.Glob("../../contrib/examples/*.hcl")
	if err != nil || len(examples) == 0 {
		t.Fatalf("no example policies: %v", err)
	}
	if code, stdout, stderr := runMain(t, "fmt", "-check", "-diff", "../../contrib/examples"); code != 0 {
		t.Fatalf("exit %d; run knockgate fmt on:\n%s%s", code, stdout, stderr)
	}
}
