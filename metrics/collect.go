package metrics

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/knockgate/knockgate/internal/nfqstat"
)

// sourceCollector emits the figures read at scrape time as const metrics,
// so each value comes straight from its owner when it is asked for rather
// than from a copy we would have to keep in step.
type sourceCollector struct {
	src       Sources
	doorNames func() []string

	// scrapeErrors counts scrapes whose proc file could not be read or
	// had lines we could not parse.
	scrapeErrors atomic.Uint64

	trackedSources, trackedSourcesLimit, grantsLimit, evictions *prometheus.Desc
	activeGrants                                                *prometheus.Desc
	queuePackets, verdictErrors, enobufs, queueReadErrors       *prometheus.Desc
	queueSyscalls                                               *prometheus.Desc
	kernelLength, kernelDropped, kernelUserDropped              *prometheus.Desc
	scrapeErrorsDesc                                            *prometheus.Desc
}

func newSourceCollector(src Sources, doorNames func() []string) *sourceCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &sourceCollector{
		src:       src,
		doorNames: doorNames,

		trackedSources:      d("knockgate_tracked_sources", "Sources with a knock sequence in progress."),
		trackedSourcesLimit: d("knockgate_tracked_sources_limit", "Most sources tracked at once (max_sources); past it, one is evicted for each new one."),
		grantsLimit:         d("knockgate_grants_limit", "Most live grants kept at once (max_grants); past it, one is evicted for each new one."),
		evictions:           d("knockgate_evictions_total", "Sources in progress and grants evicted because their table was full."),
		activeGrants:        d("knockgate_active_grants", "Live grants, by door.", "door"),

		queuePackets:    d("knockgate_queue_packets_total", "Packets received from the kernel, by netfilter queue.", "queue"),
		verdictErrors:   d("knockgate_verdict_errors_total", "Verdicts that could not be sent to the kernel, by netfilter queue.", "queue"),
		enobufs:         d("knockgate_enobufs_total", "Times the kernel reported dropping messages because the socket's receive buffer was full (ENOBUFS), by netfilter queue.", "queue"),
		queueReadErrors: d("knockgate_queue_read_errors_total", "Receive errors other than ENOBUFS, and kernel messages without a packet id, by netfilter queue.", "queue"),
		queueSyscalls:   d("knockgate_queue_syscalls_total", "System calls that read packets (call=\"receive\", each takes every packet waiting, up to 64) and sent verdicts (call=\"send\", each carries the verdicts of one receive), by netfilter queue.", "queue", "call"),

		kernelLength:      d("knockgate_kernel_queue_length", "Packets waiting in the kernel for a verdict (queue_total in nfnetlink_queue), by netfilter queue.", "queue"),
		kernelDropped:     d("knockgate_kernel_queue_dropped_total", "Packets the kernel could not queue because the queue was full (queue_dropped in nfnetlink_queue), by netfilter queue.", "queue"),
		kernelUserDropped: d("knockgate_kernel_queue_user_dropped_total", "Packets the kernel could not deliver to our socket, mostly because its receive buffer was full (user_dropped in nfnetlink_queue), by netfilter queue.", "queue"),

		scrapeErrorsDesc: d("knockgate_scrape_errors_total", "Scrapes that could not read the kernel's queue figures, or met lines in them they could not parse."),
	}
}

func (c *sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.trackedSources, c.trackedSourcesLimit, c.grantsLimit, c.evictions, c.activeGrants,
		c.queuePackets, c.verdictErrors, c.enobufs, c.queueReadErrors, c.queueSyscalls,
		c.kernelLength, c.kernelDropped, c.kernelUserDropped, c.scrapeErrorsDesc,
	} {
		ch <- d
	}
}

func (c *sourceCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	if c.src.Engine != nil {
		st := c.src.Engine()
		gauge(c.trackedSources, float64(st.Sources))
		gauge(c.trackedSourcesLimit, float64(st.MaxSources))
		gauge(c.grantsLimit, float64(st.MaxGrants))
		counter(c.evictions, st.Evictions)
	}

	if c.src.ActiveGrants != nil {
		live := c.src.ActiveGrants()
		seen := make(map[string]bool, len(live))
		// Known doors first, at 0 when they hold no grant, so a door's
		// series does not vanish when its last grant expires.
		for _, door := range c.doorNames() {
			if !seen[door] {
				seen[door] = true
				gauge(c.activeGrants, float64(live[door]), door)
			}
		}
		// Then any door the engine knows that SetDoors has not named yet:
		// its names come from the policy, so the set is still bounded.
		for door, n := range live {
			if door != "" && !seen[door] {
				seen[door] = true
				gauge(c.activeGrants, float64(n), door)
			}
		}
	}

	// ours is the queues we serve; nil means we were not told, and then
	// the kernel's figures are reported for every queue it lists.
	var ours map[uint16]bool
	if c.src.Queues != nil {
		qs := c.src.Queues()
		ours = make(map[uint16]bool, len(qs))
		for _, q := range qs {
			if ours[q.Queue] {
				continue // the same label values twice would fail the scrape
			}
			ours[q.Queue] = true
			l := strconv.Itoa(int(q.Queue))
			counter(c.queuePackets, q.Packets, l)
			counter(c.verdictErrors, q.VerdictErrors, l)
			counter(c.enobufs, q.ENOBUFS, l)
			counter(c.queueReadErrors, q.ReadErrors, l)
			counter(c.queueSyscalls, q.Receives, l, "receive")
			counter(c.queueSyscalls, q.Sends, l, "send")
		}
	}

	kqs, err := nfqstat.Read(c.src.ProcPath)
	if err != nil {
		c.scrapeErrors.Add(1)
	}
	for _, q := range kqs {
		if ours != nil && !ours[q.Number] {
			// Another program's queue (an IPS, say): not ours to report.
			continue
		}
		l := strconv.Itoa(int(q.Number))
		gauge(c.kernelLength, float64(q.Total), l)
		counter(c.kernelDropped, q.Dropped, l)
		counter(c.kernelUserDropped, q.UserDropped, l)
	}
	counter(c.scrapeErrorsDesc, c.scrapeErrors.Load())
}
