package main

import (
	"strings"
	"testing"
)

// BenchmarkPropagation's lines, as go test printed them, make section 7's
// table and its two targets.
func TestClusterSection(t *testing.T) {
	r := &report{}
	for _, line := range []string{
		"BenchmarkPropagation/nodes=3/rate=10-2         	     100	  99029182 ns/op	         0 lost	       827.0 p50-µs	      4589 p99-µs",
		"BenchmarkPropagation/nodes=3/rate=1000-2       	    5373	   1000790 ns/op	         3 lost	       339.0 p50-µs	    131951 p99-µs",
	} {
		m, ok := parseBenchLine(line)
		if !ok {
			t.Fatalf("unparsed: %s", line)
		}
		r.cluster = append(r.cluster, m)
	}
	ts := r.clusterTargets()
	if len(ts) != 2 || ts[0].Pass != "pass" || ts[0].Measured != "p99 4.6 ms, p50 0.83 ms, 0 lost" || ts[1].Pass != "MISS" {
		t.Fatalf("targets: %+v", ts)
	}
	var sb strings.Builder
	r.clusterSection(&sb)
	if !strings.Contains(sb.String(), "| BenchmarkPropagation/nodes=3/rate=1000 | 0.34 ms | 131.95 ms | 3 |") {
		t.Fatalf("section:\n%s", sb.String())
	}
}
