package unidiff

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

func TestUnifiedGolden(t *testing.T) {
	lines := func(from, to int) string {
		var b strings.Builder
		for i := from; i <= to; i++ {
			fmt.Fprintf(&b, "l%d\n", i)
		}
		return b.String()
	}
	tests := []struct {
		name, a, b, want string
	}{
		{"equal", "x\n", "x\n", ""},
		{"from empty", "", "a\nb\n", "--- o\n+++ n\n@@ -0,0 +1,2 @@\n+a\n+b\n"},
		{"to empty", "a\n", "", "--- o\n+++ n\n@@ -1 +0,0 @@\n-a\n"},
		{"newline added at end", "a\nb", "a\nb\n",
			"--- o\n+++ n\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n"},
		// Changes 7 equal lines apart make two hunks; 6 apart, one.
		{"two hunks", lines(1, 20), strings.Replace(strings.Replace(lines(1, 20), "l5\n", "L5\n", 1), "l13\n", "L13\n", 1),
			"--- o\n+++ n\n@@ -2,7 +2,7 @@\n l2\n l3\n l4\n-l5\n+L5\n l6\n l7\n l8\n" +
				"@@ -10,7 +10,7 @@\n l10\n l11\n l12\n-l13\n+L13\n l14\n l15\n l16\n"},
		{"one hunk", lines(1, 20), strings.Replace(strings.Replace(lines(1, 20), "l5\n", "L5\n", 1), "l12\n", "", 1),
			"--- o\n+++ n\n@@ -2,14 +2,13 @@\n l2\n l3\n l4\n-l5\n+L5\n l6\n l7\n l8\n l9\n l10\n l11\n-l12\n l13\n l14\n l15\n"},
		{"insert at start", "b\nc\n", "a\nb\nc\n", "--- o\n+++ n\n@@ -1,2 +1,3 @@\n+a\n b\n c\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Unified("o", "n", []byte(tt.a), []byte(tt.b)); got != tt.want {
				t.Fatalf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// Random pairs of texts: applying the diff to a gives b, and the number of
// changed lines is the minimum (len(a)+len(b)-2·LCS).
func TestUnifiedApplies(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	text := func() string {
		var b strings.Builder
		for n := r.IntN(30); n > 0; n-- {
			b.WriteString("abcde"[r.IntN(5):][:1])
			if n > 1 || r.IntN(4) > 0 {
				b.WriteByte('\n')
			}
		}
		return b.String()
	}
	for i := 0; i < 2000; i++ {
		a, b := text(), text()
		d := Unified("o", "n", []byte(a), []byte(b))
		got, changed, err := applyDiff(a, d)
		if err != nil || got != b {
			t.Fatalf("a=%q b=%q diff:\n%s\napplied: %q, %v", a, b, d, got, err)
		}
		al, bl := splitLines([]byte(a)), splitLines([]byte(b))
		if want := len(al) + len(bl) - 2*lcs(al, bl); changed != want {
			t.Fatalf("a=%q b=%q: %d changed lines, want %d:\n%s", a, b, changed, want, d)
		}
	}
}

// applyDiff applies a unified diff made by Unified, checking every
// context and deleted line and each hunk's counts, and returns the result
// and the number of - and + lines.
func applyDiff(a, d string) (string, int, error) {
	if d == "" {
		return a, 0, nil
	}
	src := splitLines([]byte(a))
	dl := strings.SplitAfter(d, "\n")
	if len(dl) < 3 || dl[0] != "--- o\n" || dl[1] != "+++ n\n" {
		return "", 0, fmt.Errorf("bad headers")
	}
	var out []string
	pos, changed := 0, 0
	num := func(s string) (start, n int) {
		a, b, ok := strings.Cut(s, ",")
		start, _ = strconv.Atoi(a)
		n = 1
		if ok {
			n, _ = strconv.Atoi(b)
		}
		return start, n
	}
	for i := 2; i < len(dl) && dl[i] != ""; {
		var oldR, newR string
		if _, err := fmt.Sscanf(dl[i], "@@ -%s +%s @@\n", &oldR, &newR); err != nil {
			return "", 0, fmt.Errorf("line %d: %q: %v", i, dl[i], err)
		}
		start, on := num(oldR)
		_, nn := num(newR)
		if on > 0 {
			start--
		}
		if start < pos || start > len(src) {
			return "", 0, fmt.Errorf("hunk %q out of place", dl[i])
		}
		out = append(out, src[pos:start]...)
		pos = start
		i++
		var gotOld, gotNew int
		for ; i < len(dl) && dl[i] != "" && !strings.HasPrefix(dl[i], "@@"); i++ {
			kind, line := dl[i][0], dl[i][1:]
			if i+1 < len(dl) && dl[i+1] == "\\ No newline at end of file\n" {
				line = strings.TrimSuffix(line, "\n")
				i++
			}
			if kind != ' ' && kind != '+' && kind != '-' {
				return "", 0, fmt.Errorf("bad line %q", dl[i])
			}
			if kind != '+' {
				if pos >= len(src) || src[pos] != line {
					return "", 0, fmt.Errorf("line %q does not match %d", line, pos)
				}
				pos++
				gotOld++
			}
			if kind != '-' {
				out = append(out, line)
				gotNew++
			}
			if kind != ' ' {
				changed++
			}
		}
		if gotOld != on || gotNew != nn {
			return "", 0, fmt.Errorf("hunk counts %d,%d, want %d,%d", gotOld, gotNew, on, nn)
		}
	}
	out = append(out, src[pos:]...)
	return strings.Join(out, ""), changed, nil
}

func lcs(a, b []string) int {
	dp := make([][]int, len(a)+1)
	for i := range dp {
		dp[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				dp[i][j] = dp[i+1][j+1] + 1
			} else {
				dp[i][j] = max(dp[i+1][j], dp[i][j+1])
			}
		}
	}
	return dp[0][0]
}
