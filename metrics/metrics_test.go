package metrics

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/knockgate/knockgate/verdict"
)

// testDoors are the doors dec's indices stand for, in the order of the
// policy that took the decisions.
var testDoors = []string{"ssh", "web", "old"}

// dec is a decision as the engine makes it: door and reset are indices
// into testDoors, and the decision carries their names too.
func dec(v verdict.Verdict, r verdict.Reason, door, reset int) verdict.Decision {
	name := func(i int) string {
		switch {
		case i == verdict.NoDoor:
			return ""
		case i < len(testDoors):
			return testDoors[i]
		}
		return fmt.Sprintf("door%d", i)
	}
	return verdict.Decision{Verdict: v, Reason: r, Door: door, Reset: reset, DoorName: name(door), ResetName: name(reset)}
}

const none = verdict.NoDoor

// packetsText renders knockgate_packets_total with every series New
// creates, at the counts given (missing means 0), plus any extra lines.
func packetsText(counts map[string]int, extra ...string) string {
	var b strings.Builder
	b.WriteString("# HELP knockgate_packets_total Packets decided, by verdict and the reason for it.\n")
	b.WriteString("# TYPE knockgate_packets_total counter\n")
	line := func(v, r string) {
		fmt.Fprintf(&b, "knockgate_packets_total{reason=%q,verdict=%q} %d\n", r, v, counts[v+"/"+r])
	}
	for _, r := range verdict.Reasons() {
		switch r {
		case verdict.ReasonUnprotected:
			line("accept", r.String())
			line("drop", r.String())
		case verdict.ReasonGranted, verdict.ReasonClusterPeer:
			line("accept", r.String())
		default:
			line("drop", r.String())
		}
	}
	for _, e := range extra {
		b.WriteString(e + "\n")
	}
	return b.String()
}

func TestScenario(t *testing.T) {
	m := New("v1.2.3", Sources{ProcPath: "testdata/does-not-exist"})
	m.SetDoors([]string{"ssh", "web", "old"})
	const ssh, web, old = 0, 1, 2
	took := 200 * time.Nanosecond
	for _, d := range []verdict.Decision{
		dec(verdict.Drop, verdict.ReasonKnock, ssh, none),           // ssh advanced
		dec(verdict.Drop, verdict.ReasonKnockRetransmit, ssh, none), // ssh retransmit
		dec(verdict.Drop, verdict.ReasonKnock, ssh, none),           // ssh advanced
		dec(verdict.Drop, verdict.ReasonOpened, ssh, none),          // ssh completed, opened
		dec(verdict.Accept, verdict.ReasonGranted, ssh, none),       // packets only
		dec(verdict.Drop, verdict.ReasonNoGrant, ssh, none),         // packets only
		dec(verdict.Drop, verdict.ReasonKnock, web, ssh),            // web advanced, ssh reset
		dec(verdict.Drop, verdict.ReasonKnockWrong, none, web),      // web reset
		dec(verdict.Drop, verdict.ReasonKnock, ssh, none),           // ssh advanced
		dec(verdict.Drop, verdict.ReasonClosed, ssh, none),          // ssh completed, revoked
		dec(verdict.Drop, verdict.ReasonNotAllowed, web, none),      // web not_allowed
		dec(verdict.Accept, verdict.ReasonUnprotected, none, web),   // web reset
		dec(verdict.Drop, verdict.ReasonUnprotected, none, none),    // packets only
		dec(verdict.Drop, verdict.ReasonMalformed, none, none),      // packets only
		dec(verdict.Drop, verdict.ReasonKnock, old, none),           // old advanced, then deleted
		dec(verdict.Drop, verdict.ReasonKnock, 7, 9),                // doors out of range: packets only
		dec(verdict.Accept, verdict.ReasonKnock, none, none),        // never produced, still counted
		dec(verdict.Drop, verdict.Reason(200), ssh, none),           // unknown reason: nothing
		dec(verdict.Verdict(9), verdict.ReasonGranted, ssh, none),   // unknown verdict: nothing
	} {
		m.Observe(d, took)
	}
	m.GrantExpired("ssh")
	m.GrantExpired("nosuch")
	m.GrantRevoked("web")
	m.GrantRevoked("ssh")
	m.Reloaded(false, time.Unix(1700000000, 0))
	m.Reloaded(true, time.Unix(1700000100, 500_000_000))
	m.Reloaded(false, time.Unix(1700000200, 0))

	// A reload drops "old", adds "new" and renumbers the others. Decisions
	// the old policy took count against their own doors, by name, or
	// against none if it is gone; "new" takes index 2, "old"'s.
	m.SetDoors([]string{"web", "ssh", "new"})
	m.Observe(verdict.Decision{Verdict: verdict.Drop, Reason: verdict.ReasonOpened, Door: 2, DoorName: "new", Reset: none}, took)
	m.Observe(dec(verdict.Drop, verdict.ReasonKnockRetransmit, ssh, none), took) // ssh retransmit, though web is at 0 now
	m.Observe(dec(verdict.Drop, verdict.ReasonKnock, old, none), took)           // old is gone: packets only

	packets := packetsText(map[string]int{
		"drop/knock": 7, "drop/knock_retransmit": 2, "drop/opened": 2, "accept/granted": 1,
		"drop/no_grant": 1, "drop/knock_wrong": 1, "drop/closed": 1, "drop/not_allowed": 1,
		"accept/unprotected": 1, "drop/unprotected": 1, "drop/malformed": 1,
	}, `knockgate_packets_total{reason="knock",verdict="accept"} 1`)

	doors := `
# HELP knockgate_knocks_total Knocks by door and what they did: advanced a sequence, completed an open or close sequence, reset a sequence in progress, came from a source the door does not allow, repeated the last knock, or replayed a TOTP sequence another source used.
# TYPE knockgate_knocks_total counter
knockgate_knocks_total{door="new",result="advanced"} 0
knockgate_knocks_total{door="new",result="completed"} 1
knockgate_knocks_total{door="new",result="not_allowed"} 0
knockgate_knocks_total{door="new",result="replay"} 0
knockgate_knocks_total{door="new",result="reset"} 0
knockgate_knocks_total{door="new",result="retransmit"} 0
knockgate_knocks_total{door="ssh",result="advanced"} 3
knockgate_knocks_total{door="ssh",result="completed"} 2
knockgate_knocks_total{door="ssh",result="not_allowed"} 0
knockgate_knocks_total{door="ssh",result="replay"} 0
knockgate_knocks_total{door="ssh",result="reset"} 1
knockgate_knocks_total{door="ssh",result="retransmit"} 2
knockgate_knocks_total{door="web",result="advanced"} 1
knockgate_knocks_total{door="web",result="completed"} 0
knockgate_knocks_total{door="web",result="not_allowed"} 1
knockgate_knocks_total{door="web",result="replay"} 0
knockgate_knocks_total{door="web",result="reset"} 2
knockgate_knocks_total{door="web",result="retransmit"} 0
# HELP knockgate_grants_total Grant events by door: opened by a knock sequence or SPA packet, revoked by a close sequence or an operator, expired, or used_up by max_connections.
# TYPE knockgate_grants_total counter
knockgate_grants_total{door="new",event="expired"} 0
knockgate_grants_total{door="new",event="opened"} 1
knockgate_grants_total{door="new",event="revoked"} 0
knockgate_grants_total{door="new",event="used_up"} 0
knockgate_grants_total{door="ssh",event="expired"} 1
knockgate_grants_total{door="ssh",event="opened"} 1
knockgate_grants_total{door="ssh",event="revoked"} 2
knockgate_grants_total{door="ssh",event="used_up"} 0
knockgate_grants_total{door="web",event="expired"} 0
knockgate_grants_total{door="web",event="opened"} 0
knockgate_grants_total{door="web",event="revoked"} 1
knockgate_grants_total{door="web",event="used_up"} 0
`
	reloads := `
# HELP knockgate_config_reloads_total Policy reloads, by result.
# TYPE knockgate_config_reloads_total counter
knockgate_config_reloads_total{result="failure"} 2
knockgate_config_reloads_total{result="success"} 1
# HELP knockgate_config_last_reload_successful Whether the last policy reload succeeded (1) or failed (0).
# TYPE knockgate_config_last_reload_successful gauge
knockgate_config_last_reload_successful 0
# HELP knockgate_config_last_reload_success_timestamp_seconds Unix time of the last successful policy reload.
# TYPE knockgate_config_last_reload_success_timestamp_seconds gauge
knockgate_config_last_reload_success_timestamp_seconds 1.7000001005e+09
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(packets+doors+reloads),
		"knockgate_packets_total", "knockgate_knocks_total", "knockgate_grants_total",
		"knockgate_config_reloads_total", "knockgate_config_last_reload_successful",
		"knockgate_config_last_reload_success_timestamp_seconds",
	); err != nil {
		t.Error(err)
	}

	// Every decision is timed, even those counted against no series.
	if n := testutil.CollectAndCount(m.duration); n != 1 {
		t.Errorf("histogram series = %d, want 1", n)
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "knockgate_decision_duration_seconds" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		if got, want := h.GetSampleCount(), uint64(22); got != want {
			t.Errorf("decisions timed = %d, want %d", got, want)
		}
		if got, want := h.GetSampleSum(), 22*took.Seconds(); got < want*0.999 || got > want*1.001 {
			t.Errorf("time observed = %g, want %g", got, want)
		}
	}
}

func TestBuildInfo(t *testing.T) {
	m := New("", Sources{ProcPath: "testdata/does-not-exist"})
	if got := testutil.ToFloat64(m.reloadOK); got != 0 {
		t.Errorf("reloads before any = %v", got)
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "knockgate_build_info" {
			continue
		}
		labels := map[string]string{}
		for _, l := range mf.GetMetric()[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["version"] != "unknown" || !strings.HasPrefix(labels["goversion"], "go") {
			t.Errorf("build info labels = %v", labels)
		}
		if v := mf.GetMetric()[0].GetGauge().GetValue(); v != 1 {
			t.Errorf("build info = %v, want 1", v)
		}
		return
	}
	t.Error("no knockgate_build_info")
}

// fakeSources returns sources as cmd wires them, with the proc file from
// testdata.
func fakeSources() Sources {
	return Sources{
		Engine: func() verdict.Stats {
			return verdict.Stats{Sources: 17, MaxSources: 100000, Grants: 3, MaxGrants: 10000, Evictions: 4}
		},
		ActiveGrants: func() map[string]int { return map[string]int{"ssh": 2, "vpn": 1} },
		Queues: func() []QueueStats {
			return []QueueStats{
				{Queue: 0, Packets: 1000, VerdictErrors: 1, ENOBUFS: 2, ReadErrors: 3, Receives: 40, Sends: 30},
				{Queue: 1, Packets: 10},
				{Queue: 1, Packets: 99}, // a repeat must not fail the scrape
			}
		},
		ProcPath: "../internal/nfqstat/testdata/nfnetlink_queue",
	}
}

func TestSources(t *testing.T) {
	m := New("test", fakeSources())
	m.SetDoors([]string{"ssh", "web"})
	want := `
# HELP knockgate_tracked_sources Sources with a knock sequence in progress.
# TYPE knockgate_tracked_sources gauge
knockgate_tracked_sources 17
# HELP knockgate_tracked_sources_limit Most sources tracked at once (max_sources); past it, one is evicted for each new one.
# TYPE knockgate_tracked_sources_limit gauge
knockgate_tracked_sources_limit 100000
# HELP knockgate_grants_limit Most live grants kept at once (max_grants); past it, one is evicted for each new one.
# TYPE knockgate_grants_limit gauge
knockgate_grants_limit 10000
# HELP knockgate_evictions_total Sources in progress and grants evicted because their table was full.
# TYPE knockgate_evictions_total counter
knockgate_evictions_total 4
# HELP knockgate_active_grants Live grants, by door.
# TYPE knockgate_active_grants gauge
knockgate_active_grants{door="ssh"} 2
knockgate_active_grants{door="vpn"} 1
knockgate_active_grants{door="web"} 0
# HELP knockgate_queue_packets_total Packets received from the kernel, by netfilter queue.
# TYPE knockgate_queue_packets_total counter
knockgate_queue_packets_total{queue="0"} 1000
knockgate_queue_packets_total{queue="1"} 10
# HELP knockgate_verdict_errors_total Verdicts that could not be sent to the kernel, by netfilter queue.
# TYPE knockgate_verdict_errors_total counter
knockgate_verdict_errors_total{queue="0"} 1
knockgate_verdict_errors_total{queue="1"} 0
# HELP knockgate_enobufs_total Times the kernel reported dropping messages because the socket's receive buffer was full (ENOBUFS), by netfilter queue.
# TYPE knockgate_enobufs_total counter
knockgate_enobufs_total{queue="0"} 2
knockgate_enobufs_total{queue="1"} 0
# HELP knockgate_queue_read_errors_total Receive errors other than ENOBUFS, and kernel messages without a packet id, by netfilter queue.
# TYPE knockgate_queue_read_errors_total counter
knockgate_queue_read_errors_total{queue="0"} 3
knockgate_queue_read_errors_total{queue="1"} 0
# HELP knockgate_queue_syscalls_total System calls that read packets (call="receive", each takes every packet waiting, up to 64) and sent verdicts (call="send", each carries the verdicts of one receive), by netfilter queue.
# TYPE knockgate_queue_syscalls_total counter
knockgate_queue_syscalls_total{call="receive",queue="0"} 40
knockgate_queue_syscalls_total{call="receive",queue="1"} 0
knockgate_queue_syscalls_total{call="send",queue="0"} 30
knockgate_queue_syscalls_total{call="send",queue="1"} 0
# HELP knockgate_kernel_queue_length Packets waiting in the kernel for a verdict (queue_total in nfnetlink_queue), by netfilter queue.
# TYPE knockgate_kernel_queue_length gauge
knockgate_kernel_queue_length{queue="0"} 3
knockgate_kernel_queue_length{queue="1"} 0
# HELP knockgate_kernel_queue_dropped_total Packets the kernel could not queue because the queue was full (queue_dropped in nfnetlink_queue), by netfilter queue.
# TYPE knockgate_kernel_queue_dropped_total counter
knockgate_kernel_queue_dropped_total{queue="0"} 0
knockgate_kernel_queue_dropped_total{queue="1"} 7
# HELP knockgate_kernel_queue_user_dropped_total Packets the kernel could not deliver to our socket, mostly because its receive buffer was full (user_dropped in nfnetlink_queue), by netfilter queue.
# TYPE knockgate_kernel_queue_user_dropped_total counter
knockgate_kernel_queue_user_dropped_total{queue="0"} 0
knockgate_kernel_queue_user_dropped_total{queue="1"} 12
# HELP knockgate_scrape_errors_total Scrapes that could not read the kernel's queue figures, or met lines in them they could not parse.
# TYPE knockgate_scrape_errors_total counter
knockgate_scrape_errors_total 0
`
	// Queue 5 in the proc file belongs to another program and is left out.
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"knockgate_tracked_sources", "knockgate_tracked_sources_limit", "knockgate_grants_limit",
		"knockgate_evictions_total", "knockgate_active_grants",
		"knockgate_queue_packets_total", "knockgate_verdict_errors_total", "knockgate_enobufs_total",
		"knockgate_queue_read_errors_total", "knockgate_queue_syscalls_total", "knockgate_kernel_queue_length",
		"knockgate_kernel_queue_dropped_total", "knockgate_kernel_queue_user_dropped_total",
		"knockgate_scrape_errors_total",
	); err != nil {
		t.Error(err)
	}
}

// Without Queues, the kernel's figures are reported for every queue it
// lists; without the proc file, they are left out and the error counted,
// and the scrape still succeeds.
func TestProcSources(t *testing.T) {
	c := newSourceCollector(Sources{ProcPath: "../internal/nfqstat/testdata/nfnetlink_queue"}, func() []string { return nil })
	want := `
# HELP knockgate_kernel_queue_length Packets waiting in the kernel for a verdict (queue_total in nfnetlink_queue), by netfilter queue.
# TYPE knockgate_kernel_queue_length gauge
knockgate_kernel_queue_length{queue="0"} 3
knockgate_kernel_queue_length{queue="1"} 0
knockgate_kernel_queue_length{queue="5"} 4096
# HELP knockgate_scrape_errors_total Scrapes that could not read the kernel's queue figures, or met lines in them they could not parse.
# TYPE knockgate_scrape_errors_total counter
knockgate_scrape_errors_total 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"knockgate_kernel_queue_length", "knockgate_scrape_errors_total"); err != nil {
		t.Error(err)
	}

	m := New("test", Sources{ProcPath: "testdata/does-not-exist"})
	for range 2 {
		if _, err := m.Registry().Gather(); err != nil {
			t.Fatalf("scrape failed without the proc file: %v", err)
		}
	}
	want = `
# HELP knockgate_scrape_errors_total Scrapes that could not read the kernel's queue figures, or met lines in them they could not parse.
# TYPE knockgate_scrape_errors_total counter
knockgate_scrape_errors_total 3
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"knockgate_scrape_errors_total", "knockgate_kernel_queue_length",
		"knockgate_kernel_queue_dropped_total", "knockgate_kernel_queue_user_dropped_total",
	); err != nil {
		t.Error(err)
	}
}

func TestLint(t *testing.T) {
	m := New("v1.2.3", fakeSources())
	m.SetDoors([]string{"ssh", "web"})
	m.SetCluster(fakeCluster)
	m.Observe(dec(verdict.Drop, verdict.ReasonOpened, 0, 1), time.Microsecond)
	m.GrantExpired("ssh")
	m.Reloaded(true, time.Now())
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	// Every knockgate metric must have been linted, not skipped for want
	// of a sample.
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "knockgate_") {
			n++
		}
	}
	if n != 27 {
		t.Errorf("knockgate metric families = %d, want 27", n)
	}
}

// The nil Metrics that tests of other packages may pass records nothing.
func TestNil(t *testing.T) {
	var m *Metrics
	m.SetDoors([]string{"ssh"})
	m.Observe(dec(verdict.Drop, verdict.ReasonOpened, 0, 0), time.Microsecond)
	m.GrantExpired("ssh")
	m.GrantRevoked("ssh")
	m.Reloaded(true, time.Now())
}

// Observe may run while a reload swaps the doors; run with -race.
func TestSetDoorsConcurrent(t *testing.T) {
	m := New("test", Sources{ProcPath: "testdata/does-not-exist"})
	m.SetDoors([]string{"a", "b"})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for i := range 20000 {
				m.Observe(dec(verdict.Drop, verdict.ReasonKnock, i%3, (i+1)%3), time.Microsecond)
				m.GrantExpired("b")
			}
		})
	}
	for i := range 100 {
		if i%2 == 0 {
			m.SetDoors([]string{"a", "b", "c"})
		} else {
			m.SetDoors([]string{"b"})
		}
		testutil.CollectAndCount(m.knocks)
	}
	wg.Wait()
	m.SetDoors([]string{"b"})
	if n := testutil.CollectAndCount(m.knocks); n != 6 {
		t.Errorf("knock series after the last SetDoors = %d, want 6 (one door)", n)
	}
	if _, err := m.Registry().Gather(); err != nil {
		t.Fatal(err)
	}
}

// hotDecisions are what a busy gateway sees, door and reset included.
var hotDecisions = []verdict.Decision{
	dec(verdict.Accept, verdict.ReasonGranted, 0, none),
	dec(verdict.Drop, verdict.ReasonNoGrant, 1, none),
	dec(verdict.Accept, verdict.ReasonUnprotected, none, none),
	dec(verdict.Drop, verdict.ReasonKnock, 1, 0),
	dec(verdict.Drop, verdict.ReasonOpened, 1, none),
	dec(verdict.Drop, verdict.ReasonKnockWrong, none, 1),
	dec(verdict.Drop, verdict.ReasonMalformed, none, none),
	dec(verdict.Drop, verdict.ReasonKnock, 99, 99),
}

func TestObserveAllocs(t *testing.T) {
	m := New("test", Sources{})
	m.SetDoors([]string{"ssh", "web"})
	allocs := testing.AllocsPerRun(1000, func() {
		for _, d := range hotDecisions {
			m.Observe(d, 180*time.Nanosecond)
		}
		m.GrantExpired("ssh")
		m.GrantRevoked("web")
	})
	if allocs != 0 {
		t.Errorf("Observe allocates %v times per run, want 0", allocs)
	}
}

func BenchmarkObserve(b *testing.B) {
	m := New("test", Sources{})
	m.SetDoors([]string{"ssh", "web"})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.Observe(hotDecisions[i%len(hotDecisions)], 180*time.Nanosecond)
		i++
	}
}

// BenchmarkObserveParallel shows the cost when several queues' goroutines
// count at once and contend for the same counters' cache lines.
func BenchmarkObserveParallel(b *testing.B) {
	m := New("test", Sources{})
	m.SetDoors([]string{"ssh", "web"})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Observe(hotDecisions[i%len(hotDecisions)], 180*time.Nanosecond)
			i++
		}
	})
}
