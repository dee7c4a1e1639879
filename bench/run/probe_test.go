package main

import "testing"

// Nearest rank: the p-th percentile of n values is the ceil(p/100 × n)-th,
// so the p99 of 4,997 connects is the 4,948th, not the 4,947th that
// rounding gave.
func TestPct(t *testing.T) {
	v := make([]float64, 4997)
	for i := range v {
		v[i] = float64(i + 1)
	}
	for _, tc := range []struct {
		vals []float64
		p    int
		want float64
	}{
		{v, 99, 4948},
		{v, 50, 2499},
		{v, 100, 4997},
		{v[:10], 25, 3},
		{v[:1], 1, 1},
		{nil, 50, 0},
	} {
		if got := pct(tc.vals, tc.p); got != tc.want {
			t.Errorf("pct(%d values, %d) = %v, want %v", len(tc.vals), tc.p, got, tc.want)
		}
	}
}
