// Package daemon is the running gate: it serves the NFQUEUE queues (through
// the Queue interface, so tests run it on fake queues without root), hands
// each packet to the verdict engine, logs and counts the decisions, and
// keeps what outlives a packet. cmd/knockgate parses flags and signals and
// calls New(cfg).Run(ctx).
//
// Where things are:
//   - daemon.go: New, Run (queues, metrics endpoint, control socket) and the
//     sweep and persist loops.
//   - observe.go: the log line and counters of each decision.
//   - reload.go: Reload, where a re-read policy is swapped in.
//   - state.go: the state file, where grants (with their expiry) and the
//     SPA replay cache are saved to disk and restored at start.
//   - status.go, revoke.go: what knockgate status and revoke ask for.
//   - control.go: the control socket's protocol and server; client.go: the
//     client half the CLI uses.
//   - notify.go: sd_notify (READY, STOPPING) and the systemd watchdog.
//   - queue.go: the Queue seam.
//
// The daemon observes decisions; it never changes a verdict.
package daemon
