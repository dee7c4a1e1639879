package main

import (
	"strings"
	"testing"
)

// BenchmarkPropagation's and BenchmarkConverge's lines, as go test printed
// them, make section 7's table, its figures and its three targets.
func TestClusterSection(t *testing.T) {
	r := &report{}
	for _, line := range []string{
		"BenchmarkPropagation/nodes=3/rate=10-2         	     100	  99029182 ns/op	         0 lost	       827.0 p50-µs	      4589 p99-µs",
		"BenchmarkPropagation/nodes=3/rate=1000-2       	    5373	   1000790 ns/op	         3 lost	       339.0 p50-µs	    131951 p99-µs",
		"BenchmarkConverge-2   	       1	9952426374 ns/op	        26.84 B/grant-in	         9.953 converge-s	    268410 state-bytes-in	         1.000 states-in	         0 update-bytes-in",
		"BenchmarkStorePerGrant-2   	       1	      4000 ns/op	       198.0 B/grant	     500 B/op	       5 allocs/op",
	} {
		m, ok := parseBenchLine(line)
		if !ok {
			t.Fatalf("unparsed: %s", line)
		}
		r.cluster = append(r.cluster, m)
	}
	ts := r.clusterTargets()
	if len(ts) != 3 || ts[0].Pass != "pass" || ts[0].Measured != "p99 4.6 ms, p50 0.83 ms, 0 lost" || ts[1].Pass != "MISS" ||
		ts[2].Pass != "pass" || ts[2].Measured != "10.0 s, 26.8 B/grant received" {
		t.Fatalf("targets: %+v", ts)
	}
	var sb strings.Builder
	r.clusterSection(&sb)
	for _, want := range []string{"| BenchmarkPropagation/nodes=3/rate=1000 | 0.34 ms | 131.95 ms | 3 |",
		"- converged 9.95 s after the heal; gw3 received 1 full state(s), 268410 B, and 0 B of updates: 26.8 B per grant",
		"- Store: 198 B of heap per live grant"} {
		if !strings.Contains(sb.String(), want) {
			t.Fatalf("section lacks %q:\n%s", want, sb.String())
		}
	}
	if strings.Contains(sb.String(), "| BenchmarkConverge") {
		t.Fatalf("section:\n%s", sb.String())
	}
}
