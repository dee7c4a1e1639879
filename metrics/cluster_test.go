package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func fakeCluster() ClusterStats {
	return ClusterStats{
		Members:   3,
		Updates:   []ClusterUpdates{{"grant", "in", 5}, {"grant", "out", 2}, {"revoke", "out", 1}},
		Ignored:   map[string]uint64{"unknown_door": 4},
		ClockSkew: 1500 * time.Millisecond,
	}
}

func TestCluster(t *testing.T) {
	m := New("test", fakeSources())
	names := []string{"knockgate_cluster_members", "knockgate_cluster_updates_total", "knockgate_cluster_ignored_total",
		"knockgate_cluster_clock_skew_seconds"}
	// No cluster: no series, but for the histogram, which has no labels
	// to leave out.
	if n := testutil.CollectAndCount(m.cluster); n != 0 {
		t.Fatalf("%d cluster series without a cluster", n)
	}
	m.SetCluster(fakeCluster)
	m.ClusterPropagation(300 * time.Microsecond)
	m.ClusterPropagation(-time.Millisecond) // a peer's clock ahead
	want := `
# HELP knockgate_cluster_clock_skew_seconds Largest clock difference, either way, to an alive peer, from its last message's timestamp.
# TYPE knockgate_cluster_clock_skew_seconds gauge
knockgate_cluster_clock_skew_seconds 1.5
# HELP knockgate_cluster_ignored_total Cluster messages and facts refused, by reason: malformed, too large, stale, for a door this gateway lacks, longer than its policy allows...
# TYPE knockgate_cluster_ignored_total counter
knockgate_cluster_ignored_total{reason="unknown_door"} 4
# HELP knockgate_cluster_members Alive members of the cluster, this gateway included.
# TYPE knockgate_cluster_members gauge
knockgate_cluster_members 3
# HELP knockgate_cluster_updates_total Shared facts (grant, revoke, replay, totp, ban) published to peers (out) or received from them and accepted (in).
# TYPE knockgate_cluster_updates_total counter
knockgate_cluster_updates_total{direction="in",kind="grant"} 5
knockgate_cluster_updates_total{direction="out",kind="grant"} 2
knockgate_cluster_updates_total{direction="out",kind="revoke"} 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	if got := testutil.CollectAndCount(m.propagation); got != 1 {
		t.Fatalf("propagation series = %d", got)
	}
	mfs, _ := m.Registry().Gather()
	for _, mf := range mfs {
		if mf.GetName() == "knockgate_cluster_propagation_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 2 || h.GetBucket()[0].GetCumulativeCount() != 1 || h.GetBucket()[1].GetCumulativeCount() != 2 {
				t.Fatalf("propagation histogram: %v", h)
			}
		}
	}
	problems, err := testutil.CollectAndLint(m.cluster)
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

func TestClusterNil(t *testing.T) {
	var m *Metrics
	m.SetCluster(fakeCluster)
	m.ClusterPropagation(time.Second)
}
