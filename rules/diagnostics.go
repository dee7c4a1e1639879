package rules

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// Error is an invalid policy. Diags holds every problem found, in source
// order.
type Error struct {
	Diags hcl.Diagnostics
	// files lets WriteText quote the offending source lines.
	files map[string]*hcl.File
}

func newError(diags hcl.Diagnostics, files map[string]*hcl.File) *Error {
	// Diagnostics come from several passes (syntax, per door, across doors),
	// and gohcl walks attributes in map order; sorting by position makes the
	// output read top to bottom and stay the same from run to run.
	diags = sortDiagnostics(diags)

	return &Error{Diags: diags, files: files}
}

// Error gives one "file:line:col: summary; detail" line per diagnostic.
func (e *Error) Error() string {
	var b strings.Builder
	for i, d := range e.Diags {
		if i > 0 {
			b.WriteByte('\n')
		}
		if d.Subject != nil {
			b.WriteString(pos(*d.Subject))
			b.WriteString(": ")
		}
		b.WriteString(d.Summary)
		if d.Detail != "" {
			b.WriteString("; ")
			b.WriteString(d.Detail)
		}
	}
	return b.String()
}

// WriteText writes the diagnostics as hclfmt does, each with the source
// lines it concerns. width wraps the detail text (0 for no wrapping); color
// adds terminal escapes.
func (e *Error) WriteText(w io.Writer, width uint, color bool) error {
	return hcl.NewDiagnosticTextWriter(w, e.files, width, color).WriteDiagnostics(e.Diags)
}

// pos formats the start of r as file:line:col, the form editors and
// terminals turn into a link (hcl.Range.String gives file:line,col-col).
func pos(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

// sortDiagnostics returns a copy of diags in source order (those without a
// position first), so that a list of errors reads top to bottom.
func sortDiagnostics(diags hcl.Diagnostics) hcl.Diagnostics {
	diags = slices.Clone(diags)
	slices.SortStableFunc(diags, func(a, b *hcl.Diagnostic) int {
		switch {
		case a.Subject == nil && b.Subject == nil:
			return 0
		case a.Subject == nil:
			return -1
		case b.Subject == nil:
			return 1
		}
		return cmp.Or(
			cmp.Compare(a.Subject.Filename, b.Subject.Filename),
			cmp.Compare(a.Subject.Start.Byte, b.Subject.Start.Byte),
		)
	})
	return diags
}
