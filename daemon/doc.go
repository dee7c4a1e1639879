// Package daemon is the running gate: it serves the NFQUEUE queues (through
// the Queue interface, so tests run it on fake queues without root), hands
// each packet to the verdict engine, logs and counts the decisions, and
// keeps what outlives a packet. cmd/knockgate parses flags and signals and
// calls New(cfg).Run(ctx).
//
// Where things are:
//   - daemon.go: New, Run (queues, metrics endpoint, control socket) and the
//     sweep and persist loops.
//   - observe.go: the log line and counters of each decision; knocklog.go:
//     the rate-limited info line saying why a knock failed.
//   - cluster.go: the cluster node (a policy's cluster block): what the
//     engine records goes to the peers, what they send goes to the engine.
//   - metricslisten.go: the metrics endpoint, retried while its port is
//     taken, and what makes the daemon report itself degraded.
//   - reload.go: Reload, where a re-read policy is swapped in.
//   - state.go: the state file's format and checks, where grants (with
//     their expiry and connections left) and the SPA replay cache are
//     saved to disk and read back; statewriter.go: the daemon's saves and
//     restore, what a failed save does; statelock.go: the lock that keeps
//     a second daemon off the state file.
//   - status.go, inspect.go, revoke.go: what knockgate status, unban and
//     revoke ask for.
//   - control.go: the control socket's protocol and server; client.go: the
//     client half the CLI uses.
//   - notify.go: sd_notify (READY, STOPPING) and the systemd watchdog.
//   - queue.go: the Queue seam.
//
// The daemon observes decisions; it never changes a verdict.
package daemon
