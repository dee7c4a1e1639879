package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Section 7: cluster propagation (issue 13), from cluster's
// BenchmarkPropagation: three memberlist nodes in one process on
// 127.0.0.1, a grant published on one until the two others' engines hold
// it, paced at 10 and 1,000 grants/s. The namespace version (knock on gw1
// to a usable connect on gw2) is integration's; this one needs no root.
// Then, once each: BenchmarkConverge (a node cut off for 30 s while
// 10,000 grants are made), BenchmarkStorePerGrant (memory per grant) and
// BenchmarkFullState (a full state's size and cost).

const (
	clusterBenchCmd    = "go test -run '^$' -bench BenchmarkPropagation -benchtime 10s ./cluster/"
	clusterConvergeCmd = "go test -run '^$' -bench 'BenchmarkConverge|BenchmarkStorePerGrant|BenchmarkFullState' -benchtime 1x ./cluster/"
)

func clusterBench(ctx context.Context) ([]microResult, error) {
	res, err := goBench(ctx, 3*time.Minute, "-bench", "BenchmarkPropagation", "-benchtime", "10s", "./cluster/")
	more, err2 := goBench(ctx, 3*time.Minute, "-bench", "BenchmarkConverge|BenchmarkStorePerGrant|BenchmarkFullState", "-benchtime", "1x", "./cluster/")
	return append(res, more...), errors.Join(err, err2)
}

// clusterNamed is the result of the cluster benchmark name.
func (r *report) clusterNamed(name string) *microResult {
	for i := range r.cluster {
		if r.cluster[i].Name == name {
			return &r.cluster[i]
		}
	}
	return nil
}

// convergeMax is the target for BenchmarkConverge: what the daemon's
// settings bound it by, a join retried every 5 s whose attempt started
// during the partition hangs for memberlist's 10 s TCP timeout, plus the
// transfer.
const convergeMax = 15.0 // s

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
	what := fmt.Sprintf("converges after a 30 s partition with 10,000 grants (≤ %.0f s: 10 s dial timeout + 5 s join retry)", convergeMax)
	m := r.clusterNamed("BenchmarkConverge")
	s, ok := 0.0, false
	if m != nil {
		s, ok = m.extra("converge-s")
	}
	if !ok {
		return append(ts, target{what, "not measured", "n/a"})
	}
	in, _ := m.extra("B/grant-in")
	return append(ts, target{what, fmt.Sprintf("%.1f s, %.1f B/grant received", s, in), passIf(s <= convergeMax)})
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
			if !strings.HasPrefix(m.Name, "BenchmarkPropagation") {
				continue
			}
			p50, _ := m.extra("p50-µs")
			p99, _ := m.extra("p99-µs")
			lost, _ := m.extra("lost")
			fmt.Fprintf(sb, "| %s | %.2f ms | %.2f ms | %.0f |\n", m.Name, p50/1000, p99/1000, lost)
		}
	}
	fmt.Fprintf(sb, "\n`%s`: gw3 of three such nodes, with the daemon's settings (push/pull every 5 s, join retried every 5 s), "+
		"has its traffic dropped both ways for 30 s while gw1 and gw2 make 10,000 grants; from the heal until gw3 holds them all. "+
		"Bytes are cluster payload, without memberlist's framing and encryption.\n\n", clusterConvergeCmd)
	if m := r.clusterNamed("BenchmarkConverge"); m != nil {
		s, _ := m.extra("converge-s")
		st, _ := m.extra("state-bytes-in")
		n, _ := m.extra("states-in")
		up, _ := m.extra("update-bytes-in")
		in, _ := m.extra("B/grant-in")
		fmt.Fprintf(sb, "- converged %.2f s after the heal; gw3 received %.0f full state(s), %.0f B, and %.0f B of updates: %.1f B per grant\n", s, n, st, up, in)
	} else {
		sb.WriteString("- convergence: not measured\n")
	}
	if m := r.clusterNamed("BenchmarkStorePerGrant"); m != nil {
		if v, ok := m.extra("B/grant"); ok {
			fmt.Fprintf(sb, "- Store: %.0f B of heap per live grant (10,000 merged)\n", v)
		}
	}
	if m := r.clusterNamed("BenchmarkFullState"); m != nil {
		sz, _ := m.extra("state-bytes")
		pg, _ := m.extra("B/grant-on-wire")
		fmt.Fprintf(sb, "- full state of 10,000 grants: %.0f B (%.1f B per grant), encoded, decoded and merged in %.0f ms\n", sz, pg, m.NsOp/1e6)
	}
	if r.clusterErr != nil {
		fmt.Fprintf(sb, "\ngo test failed: `%v`\n", r.clusterErr)
	}
}
