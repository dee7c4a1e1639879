package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Section 7: cluster propagation (issue 13), from cluster's
// BenchmarkPropagation: three memberlist nodes in one process on
// 127.0.0.1, a grant published on one until the two others' engines hold
// it, paced at 10 and 1,000 grants/s. The namespace version (knock on gw1
// to a usable connect on gw2) is integration's; this one needs no root.

const clusterBenchCmd = "go test -run '^$' -bench BenchmarkPropagation -benchtime 10s ./cluster/"

func clusterBench(ctx context.Context) ([]microResult, error) {
	return goBench(ctx, 3*time.Minute, "-bench", "BenchmarkPropagation", "-benchtime", "10s", "./cluster/")
}

// extra is the metric of unit a benchmark reported, and whether it did.
func (m *microResult) extra(unit string) (float64, bool) {
	for _, e := range m.Extra {
		if e.Unit == unit {
			return e.V, true
		}
	}
	return 0, false
}

// clusterRate is the BenchmarkPropagation result at rate grants/s.
func (r *report) clusterRate(rate int) *microResult {
	for i := range r.cluster {
		if strings.HasSuffix(r.cluster[i].Name, fmt.Sprintf("/rate=%d", rate)) {
			return &r.cluster[i]
		}
	}
	return nil
}

func (r *report) clusterTargets() []target {
	var ts []target
	for _, t := range []struct {
		rate int
		max  float64 // µs
	}{{10, 20_000}, {1000, 100_000}} {
		what := fmt.Sprintf("cluster propagation p99 ≤ %.0f ms at %d grants/s (3 nodes, loopback)", t.max/1000, t.rate)
		m := r.clusterRate(t.rate)
		p99, ok := 0.0, false
		if m != nil {
			p99, ok = m.extra("p99-µs")
		}
		if !ok {
			ts = append(ts, target{what, "not measured", "n/a"})
			continue
		}
		p50, _ := m.extra("p50-µs")
		lost, _ := m.extra("lost")
		ts = append(ts, target{what, fmt.Sprintf("p99 %.1f ms, p50 %.2f ms, %.0f lost", p99/1000, p50/1000, lost), passIf(p99 <= t.max && lost == 0)})
	}
	return ts
}

func (r *report) clusterSection(sb *strings.Builder) {
	fmt.Fprintf(sb, "\n## 7. Cluster propagation\n\n`%s`: three memberlist nodes in one process on 127.0.0.1, "+
		"a grant published on one until the engines of the two others hold it (Publish to ApplyGrant), paced at the rate; "+
		"each operation is one grant, each arrival one sample.\n\n", clusterBenchCmd)
	switch {
	case r.opts.skipped("cluster"):
		sb.WriteString("Skipped (-skip cluster).\n")
		return
	case len(r.cluster) == 0 && r.clusterErr == nil:
		sb.WriteString("Not run.\n")
		return
	}
	if len(r.cluster) > 0 {
		sb.WriteString("| benchmark | p50 | p99 | lost |\n|---|---:|---:|---:|\n")
		for i := range r.cluster {
			m := &r.cluster[i]
			p50, _ := m.extra("p50-µs")
			p99, _ := m.extra("p99-µs")
			lost, _ := m.extra("lost")
			fmt.Fprintf(sb, "| %s | %.2f ms | %.2f ms | %.0f |\n", m.Name, p50/1000, p99/1000, lost)
		}
	}
	if r.clusterErr != nil {
		fmt.Fprintf(sb, "\ngo test failed: `%v`\n", r.clusterErr)
	}
}
