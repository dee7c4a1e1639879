package rules

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// FuzzParse checks that no input makes Parse panic and that whatever it
// accepts is a policy the engine can enforce. Seeds live in
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, src []byte) {
		p, err := Parse(src, "fuzz.hcl")
		if err != nil {
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("Parse gave %T, want *Error: %v", err, err)
			}
			if len(perr.Diags) == 0 || err.Error() == "" {
				t.Fatalf("Parse gave an empty *Error")
			}
			// The text writer indexes the source by the diagnostics'
			// ranges; a range past the end would panic there.
			if werr := perr.WriteText(&bytes.Buffer{}, 80, true); werr != nil {
				t.Fatalf("WriteText: %v", werr)
			}
			return
		}
		if p.MaxSources < 1 || p.MaxGrants < 1 {
			t.Fatalf("caps %d, %d below 1", p.MaxSources, p.MaxGrants)
		}
		names := map[string]bool{}
		starts := map[verdict.Port]bool{}
		knocks := map[verdict.Port]bool{}
		opens := map[verdict.Port]bool{}
		for _, d := range p.Doors {
			if names[d.Name] {
				t.Fatalf("door name %q repeated", d.Name)
			}
			names[d.Name] = true
			if (len(d.Sequence) == 0 && d.SPA == nil && d.TOTP == nil) || len(d.Open) == 0 {
				t.Fatalf("door %q has sequence %v, no spa or totp block, open %v", d.Name, d.Sequence, d.Open)
			}
			if d.SequenceTimeout <= 0 || d.OpenFor <= 0 {
				t.Fatalf("door %q has sequence_timeout %v, open_for %v", d.Name, d.SequenceTimeout, d.OpenFor)
			}
			for _, seq := range [][]verdict.Port{d.Sequence, d.CloseSequence} {
				if len(seq) == 0 {
					continue
				}
				if starts[seq[0]] {
					t.Fatalf("door %q: first knock %v shared", d.Name, seq[0])
				}
				starts[seq[0]] = true
				for _, k := range seq {
					knocks[k] = true
				}
			}
			for _, o := range d.Open {
				opens[o] = true
			}
			for _, a := range d.AllowFrom {
				if !a.IsValid() || a != a.Masked() {
					t.Fatalf("door %q: allow_from %v not a valid masked prefix", d.Name, a)
				}
			}
		}
		for k := range knocks {
			if opens[k] {
				t.Fatalf("%v is both a knock and open", k)
			}
		}
		// What rules accepts, the engine must too. Small caps keep the
		// engine's up-front tables from swamping the fuzzer.
		vp := p.Policy
		vp.MaxSources, vp.MaxGrants = 4, 4
		if _, err := verdict.NewEngine(vp, time.Unix(0, 0)); err != nil {
			t.Fatalf("the engine refuses a policy rules accepted: %v", err)
		}
	})
}
