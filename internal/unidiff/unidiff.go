// Package unidiff writes the unified diffs of knockgate fmt -diff: the
// shortest edit script between two texts (Myers' O(ND) algorithm) as
// GNU diff prints it, with 3 lines of context, so patch -p0 applies it.
package unidiff

import (
	"bytes"
	"fmt"
	"strings"
)

// Unified returns a unified diff (3 lines of context) that turns a into
// b, with oldName and newName in the ---/+++ headers, or "" if they are
// equal. The names follow gofmt -d: "x.hcl.orig" and "x.hcl", which
// `patch -p0` applies to x.hcl.
func Unified(oldName, newName string, a, b []byte) string {
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
