// Package metrics owns knockgate's metric names, its Prometheus registry
// and the HTTP endpoint that serves them.
//
// Every name is knockgate_<thing>_<unit>: counters end in _total, durations
// are in seconds, and knockgate_build_info carries the version. The
// registry is our own rather than the global default, so that nothing a
// library registers behind our back is exposed, and so that each test can
// build a fresh one.
//
// # What is measured, and when
//
// Per-packet figures arrive through [Metrics.Observe], which runs on the
// gate's receive goroutine for every packet. It must not slow the gate
// down, so it allocates nothing: every series it can touch is created
// beforehand (by [New] for verdicts and reasons, by [Metrics.SetDoors] for
// doors) and Observe only indexes arrays and increments counters.
//
// Everything else is read at scrape time from [Sources]: the engine's table
// occupancy, live grants per door, our per-queue counters, and the kernel's
// own view of each queue from /proc/net/netfilter/nfnetlink_queue. Reading
// at scrape time means the numbers come straight from their owner and
// cannot drift from it. A source that fails (such as a missing proc file)
// leaves its metrics out; it never fails the scrape.
//
// Metrics observe decisions; they never steer them.
//
// # Labels
//
// Labels take values only from bounded sets: door (the policy's door
// names), verdict, reason (the closed set of [verdict.Reason]), queue,
// result and event. Never a source address or port: those are chosen by
// whoever sends packets, so a label made of them would let a flood of
// spoofed knocks create series without bound, exhausting the daemon's
// memory and the Prometheus server's. Who knocked belongs in the logs.
//
// # Listening
//
// The address comes from the policy, whose default (rules.DefaultMetricsListen)
// is 127.0.0.1:8789. Loopback, because the endpoint reveals the policy's
// door names and when doors open, which is not for every host on the
// network: an operator who wants remote scraping says so with an explicit
// address. Port 8789 lies outside 9100-9999, the range where
// Prometheus exporters customarily take their ports, so it does not collide
// with node_exporter (9100) or the like on a gateway that already runs
// them.
package metrics
