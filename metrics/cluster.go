package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ClusterStats are a cluster node's figures, read at scrape time (the
// daemon fills them from cluster.Node.Stats and MaxSkew).
type ClusterStats struct {
	// Members counts the alive members, this gateway included.
	Members int
	// Updates counts shared facts by kind ("grant", "revoke"...) and
	// direction ("in" from peers, "out" published).
	Updates []ClusterUpdates
	// Ignored counts refused messages and facts by reason.
	Ignored map[string]uint64
	// ClockSkew is the largest clock skew, either way, among alive peers.
	ClockSkew time.Duration
}

// ClusterUpdates is one series of knockgate_cluster_updates_total.
type ClusterUpdates struct {
	Kind, Direction string
	N               uint64
}

// clusterCollector emits the cluster's figures when a source is set:
// without a cluster block the series are absent, as the queue's are
// without a queue.
type clusterCollector struct {
	src                                  atomic.Pointer[func() ClusterStats]
	members, updates, ignored, clockSkew *prometheus.Desc
}

func newClusterCollector() *clusterCollector {
	return &clusterCollector{
		members: prometheus.NewDesc("knockgate_cluster_members",
			"Alive members of the cluster, this gateway included.", nil, nil),
		updates: prometheus.NewDesc("knockgate_cluster_updates_total",
			"Shared facts (grant, revoke, replay, totp, ban) published to peers (out) or received from them and accepted (in).",
			[]string{"kind", "direction"}, nil),
		ignored: prometheus.NewDesc("knockgate_cluster_ignored_total",
			"Cluster messages and facts refused, by reason: malformed, too large, stale, for a door this gateway lacks, longer than its policy allows...",
			[]string{"reason"}, nil),
		clockSkew: prometheus.NewDesc("knockgate_cluster_clock_skew_seconds",
			"Largest clock difference, either way, to an alive peer, from its last message's timestamp.", nil, nil),
	}
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.members
	ch <- c.updates
	ch <- c.ignored
	ch <- c.clockSkew
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	src := c.src.Load()
	if src == nil {
		return
	}
	st := (*src)()
	ch <- prometheus.MustNewConstMetric(c.members, prometheus.GaugeValue, float64(st.Members))
	ch <- prometheus.MustNewConstMetric(c.clockSkew, prometheus.GaugeValue, st.ClockSkew.Seconds())
	for _, u := range st.Updates {
		ch <- prometheus.MustNewConstMetric(c.updates, prometheus.CounterValue, float64(u.N), u.Kind, u.Direction)
	}
	for r, n := range st.Ignored {
		ch <- prometheus.MustNewConstMetric(c.ignored, prometheus.CounterValue, float64(n), r)
	}
}

func newPropagation() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "knockgate_cluster_propagation_seconds",
		Help: "Time from a peer's sending of an update, by its clock, to its merge here (so it includes the clocks' skew).",
		// 100µs to about 6.5s: a direct send on a LAN takes about 0.1 ms,
		// a repair by push/pull tens of seconds, which lands in +Inf.
		Buckets: prometheus.ExponentialBuckets(100e-6, 3, 11),
	})
}

// SetCluster sets the source of the cluster's figures; the daemon calls it
// once its cluster node runs.
func (m *Metrics) SetCluster(src func() ClusterStats) {
	if m == nil {
		return
	}
	m.cluster.src.Store(&src)
}

// ClusterPropagation records an update's time from its sender to here.
// A negative time (a peer's clock ahead) counts as 0.
func (m *Metrics) ClusterPropagation(d time.Duration) {
	if m == nil {
		return
	}
	m.propagation.Observe(max(d, 0).Seconds())
}
