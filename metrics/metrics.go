package metrics

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/knockgate/knockgate/internal/nfqstat"
	"github.com/knockgate/knockgate/verdict"
)

// Sources are the figures read at scrape time. A nil func is skipped, and
// its metrics are left out.
type Sources struct {
	// Engine returns the engine's occupancy: tracked sources, caps and
	// evictions.
	Engine func() verdict.Stats
	// ActiveGrants returns the live grants per door name.
	ActiveGrants func() map[string]int
	// Queues returns our counters for each queue we serve.
	Queues func() []QueueStats
	// ProcPath is the kernel's queue status file; "" means DefaultProcPath.
	ProcPath string
}

// DefaultProcPath is where the kernel lists its netfilter queues, one line
// per bound queue, for the network namespace of the reader.
const DefaultProcPath = nfqstat.Path

// QueueStats are our own counters for one netfilter queue (see gate.Stats).
type QueueStats struct {
	Queue                                       uint16
	Packets, VerdictErrors, ENOBUFS, ReadErrors uint64
	// Receives and Sends count system calls, so that calls per packet
	// show how well the gate batches under the load it meets.
	Receives, Sends uint64
}

// Results of a knock, the result label of knockgate_knocks_total.
const (
	resultAdvanced   = "advanced"
	resultCompleted  = "completed"
	resultReset      = "reset"
	resultNotAllowed = "not_allowed"
	resultRetransmit = "retransmit"
	resultReplay     = "replay"
)

// Grant events, the event label of knockgate_grants_total.
const (
	eventOpened  = "opened"
	eventRevoked = "revoked"
	eventExpired = "expired"
	eventUsedUp  = "used_up"
)

// counterRef boxes a Counter so that it can sit behind an atomic.Pointer.
type counterRef struct{ prometheus.Counter }

// doorCounters are one door's series, created by SetDoors so that Observe
// only increments them.
type doorCounters struct {
	advanced, completed, reset, notAllowed, retransmit prometheus.Counter
	opened, revoked, expired, usedUp                   prometheus.Counter
	replay                                             prometheus.Counter
}

// doorSet is the doors of one policy. It is immutable once published, so
// Observe reads it through an atomic pointer without a lock.
type doorSet struct {
	names  []string
	doors  []doorCounters // indexed like Decision.Door
	byName map[string]int
}

// named returns the counters of the door called name, or nil. The index i
// is a hint, right unless a reload renumbered the doors: one string
// comparison (the names share their bytes, so it is a pointer check)
// spares the map lookup on every packet.
func (ds *doorSet) named(i int, name string) *doorCounters {
	if name == "" {
		return nil
	}
	// The uint conversion makes NoDoor (-1) out of range too.
	if uint(i) < uint(len(ds.doors)) && ds.names[i] == name {
		return &ds.doors[i]
	}
	if j, ok := ds.byName[name]; ok {
		return &ds.doors[j]
	}
	return nil
}

// Metrics holds knockgate's registry and the series the daemon updates.
// Its methods are safe for concurrent use. The recording methods (SetDoors,
// Observe, GrantExpired, GrantRevoked, Reloaded) accept a nil *Metrics and
// do nothing, so code under test can do without one.
type Metrics struct {
	reg *prometheus.Registry

	packetsVec *prometheus.CounterVec
	// packets holds the series of knockgate_packets_total, indexed by
	// [verdict][reason]. The slots of combinations the engine never
	// produces start empty and are filled on first use (see countRare).
	packets  [2][]atomic.Pointer[counterRef]
	rareMu   sync.Mutex
	duration prometheus.Histogram

	knocks *prometheus.CounterVec
	grants *prometheus.CounterVec
	doorMu sync.Mutex // serialises SetDoors
	doors  atomic.Pointer[doorSet]

	reloads      *prometheus.CounterVec
	reloadOK     prometheus.Counter
	reloadFailed prometheus.Counter
	lastReloadOK prometheus.Gauge
	lastReloadAt prometheus.Gauge

	cluster     *clusterCollector
	propagation prometheus.Histogram
}

// New returns Metrics with a registry of its own holding knockgate's
// metrics and the Go runtime and process collectors. version is reported
// by knockgate_build_info.
func New(version string, src Sources) *Metrics {
	if version == "" {
		version = "unknown"
	}
	if src.ProcPath == "" {
		src.ProcPath = DefaultProcPath
	}
	m := &Metrics{reg: prometheus.NewRegistry(), cluster: newClusterCollector(), propagation: newPropagation()}

	m.packetsVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "knockgate_packets_total",
		Help: "Packets decided, by verdict and the reason for it.",
	}, []string{"verdict", "reason"})
	reasons := verdict.Reasons()
	for _, v := range []verdict.Verdict{verdict.Drop, verdict.Accept} {
		m.packets[v] = make([]atomic.Pointer[counterRef], len(reasons))
		for _, r := range reasons {
			if canOccur(v, r) {
				m.packets[v][r].Store(&counterRef{m.packetsVec.WithLabelValues(v.String(), r.String())})
			}
		}
	}
	m.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "knockgate_decision_duration_seconds",
		Help: "Time taken to decide the verdict of one packet.",
		// 50ns to about 1.2ms: a decision is a few table lookups under a
		// lock, so anything past a microsecond is lock contention or a
		// descheduled goroutine, and is worth seeing.
		Buckets: prometheus.ExponentialBuckets(50e-9, 2.5, 12),
	})

	m.knocks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "knockgate_knocks_total",
		Help: "Knocks by door and what they did: advanced a sequence, completed an open or close sequence, " +
			"reset a sequence in progress, came from a source the door does not allow, repeated the last knock, or replayed a TOTP sequence another source used.",
	}, []string{"door", "result"})
	m.grants = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "knockgate_grants_total",
		Help: "Grant events by door: opened by a knock sequence or SPA packet, revoked by a close sequence or an operator, expired, or used_up by max_connections.",
	}, []string{"door", "event"})
	m.doors.Store(&doorSet{byName: map[string]int{}})

	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "knockgate_config_reloads_total",
		Help: "Policy reloads, by result.",
	}, []string{"result"})
	m.reloadOK = m.reloads.WithLabelValues("success")
	m.reloadFailed = m.reloads.WithLabelValues("failure")
	m.lastReloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "knockgate_config_last_reload_successful",
		Help: "Whether the last policy reload succeeded (1) or failed (0).",
	})
	m.lastReloadAt = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "knockgate_config_last_reload_success_timestamp_seconds",
		Help: "Unix time of the last successful policy reload.",
	})

	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "knockgate_build_info",
		Help:        "Always 1; the labels say which build of knockgate is running.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.packetsVec, m.duration, m.knocks, m.grants,
		m.reloads, m.lastReloadOK, m.lastReloadAt, buildInfo,
		newSourceCollector(src, m.doorNames),
		m.cluster, m.propagation,
	)
	return m
}

// canOccur reports whether a decision can pair v with r, and so whether
// the series is created up front: a policy's default for unprotected ports
// may be either verdict, a live grant is the only reason to accept a
// protected port (and a cluster peer the only one to accept the cluster
// port whatever that default), and everything else (knocks included, so that a scanner
// cannot tell knock ports from filtered ones) is dropped.
func canOccur(v verdict.Verdict, r verdict.Reason) bool {
	switch r {
	case verdict.ReasonUnprotected:
		return true
	case verdict.ReasonGranted, verdict.ReasonClusterPeer:
		return v == verdict.Accept
	}
	return v == verdict.Drop
}

// Registry returns the registry holding every knockgate metric.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetDoors names the policy's doors, in the order of their indices in
// Decision.Door. Call it at start and after every reload. Series of doors
// that are gone are deleted; those of new doors are created at zero, so
// dashboards show them before their first knock; those of doors that
// remain keep counting.
//
// Observe counts a decision against the door it names (DoorName), so one
// the old policy took but Observe sees after SetDoors still counts against
// its own door, and not at all if that door is gone.
func (m *Metrics) SetDoors(names []string) {
	if m == nil {
		return
	}
	m.doorMu.Lock()
	defer m.doorMu.Unlock()
	old := m.doors.Load()
	ds := &doorSet{
		names:  append([]string(nil), names...),
		doors:  make([]doorCounters, len(names)),
		byName: make(map[string]int, len(names)),
	}
	for i, n := range names {
		if _, dup := ds.byName[n]; !dup {
			ds.byName[n] = i
		}
		k := func(result string) prometheus.Counter { return m.knocks.WithLabelValues(n, result) }
		g := func(event string) prometheus.Counter { return m.grants.WithLabelValues(n, event) }
		ds.doors[i] = doorCounters{
			advanced:   k(resultAdvanced),
			completed:  k(resultCompleted),
			reset:      k(resultReset),
			notAllowed: k(resultNotAllowed),
			retransmit: k(resultRetransmit),
			replay:     k(resultReplay),
			opened:     g(eventOpened),
			revoked:    g(eventRevoked),
			usedUp:     g(eventUsedUp),
			expired:    g(eventExpired),
		}
	}
	m.doors.Store(ds)
	for _, n := range old.names {
		if _, kept := ds.byName[n]; !kept {
			m.knocks.DeletePartialMatch(prometheus.Labels{"door": n})
			m.grants.DeletePartialMatch(prometheus.Labels{"door": n})
		}
	}
}

func (m *Metrics) doorNames() []string { return m.doors.Load().names }

// Observe counts one decision and the time it took. It is called for every
// packet, so it allocates nothing and takes no lock: it only indexes
// series created beforehand. Doors are those d.DoorName and d.ResetName
// name; a door SetDoors did not name is not counted against.
func (m *Metrics) Observe(d verdict.Decision, took time.Duration) {
	if m == nil {
		return
	}
	if v := int(d.Verdict); v < len(m.packets) && int(d.Reason) < len(m.packets[v]) {
		if c := m.packets[v][d.Reason].Load(); c != nil {
			c.Inc()
		} else {
			m.countRare(d.Verdict, d.Reason)
		}
	}
	m.duration.Observe(took.Seconds())

	ds := m.doors.Load()
	if rc := ds.named(d.Reset, d.ResetName); rc != nil {
		rc.reset.Inc()
	}
	dc := ds.named(d.Door, d.DoorName)
	if dc == nil {
		return
	}
	if d.GrantEnded {
		dc.usedUp.Inc()
	}
	switch d.Reason {
	case verdict.ReasonKnockReplay:
		dc.replay.Inc()
	case verdict.ReasonKnock:
		dc.advanced.Inc()
	case verdict.ReasonKnockRetransmit:
		dc.retransmit.Inc()
	case verdict.ReasonNotAllowed:
		dc.notAllowed.Inc()
	case verdict.ReasonOpened:
		dc.completed.Inc()
		dc.opened.Inc()
	case verdict.ReasonClosed:
		// A completed close sequence, whether or not the source held a
		// grant: the engine deletes it either way and does not say.
		dc.completed.Inc()
		dc.revoked.Inc()
	}
}

// countRare counts a verdict and reason that canOccur says never go
// together. Should the engine grow such a path, its packets are still
// counted; creating the series costs one allocation, the first time only.
func (m *Metrics) countRare(v verdict.Verdict, r verdict.Reason) {
	m.rareMu.Lock()
	slot := &m.packets[v][r]
	c := slot.Load()
	if c == nil {
		c = &counterRef{m.packetsVec.WithLabelValues(v.String(), r.String())}
		slot.Store(c)
	}
	m.rareMu.Unlock()
	c.Inc()
}

// GrantExpired counts a grant of door that ran out (from the engine's
// sweep). A door not named by the last SetDoors is ignored, so an expiry
// racing a reload cannot bring back the series of a removed door.
func (m *Metrics) GrantExpired(door string) {
	if dc := m.door(door); dc != nil {
		dc.expired.Inc()
	}
}

// GrantRevoked counts a grant of door revoked by an operator. Close
// sequences are counted by Observe (ReasonClosed), not here.
func (m *Metrics) GrantRevoked(door string) {
	if dc := m.door(door); dc != nil {
		dc.revoked.Inc()
	}
}

func (m *Metrics) door(name string) *doorCounters {
	if m == nil {
		return nil
	}
	ds := m.doors.Load()
	if i, ok := ds.byName[name]; ok {
		return &ds.doors[i]
	}
	return nil
}

// Reloaded records the outcome of a policy reload at the given time. Call
// it for the initial load too, as Prometheus does for its own
// configuration, so that knockgate_config_last_reload_successful and its
// timestamp mean something before the first reload.
func (m *Metrics) Reloaded(ok bool, at time.Time) {
	if m == nil {
		return
	}
	if !ok {
		m.reloadFailed.Inc()
		m.lastReloadOK.Set(0)
		return
	}
	m.reloadOK.Inc()
	m.lastReloadOK.Set(1)
	m.lastReloadAt.Set(float64(at.Unix()) + float64(at.Nanosecond())/1e9)
}
