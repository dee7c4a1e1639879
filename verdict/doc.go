// Package verdict owns the gate's decisions: knock progress per source,
// grants, and the verdict for every queued packet.
//
// It is pure: no I/O, no clocks, no goroutines. The caller passes the time
// into every call (Decide, Sweep), so tests drive it with a fake clock and the
// daemon drives it with time.Now. Memory is bounded by the policy's caps: the
// tables are allocated whole when an Engine is built (and by Reload for a
// cap the new policy changes; a table whose cap stays is kept) and never
// grow, so a flood of knocks from spoofed sources costs CPU, never memory,
// and a reload costs memory only for what it changes.
//
// # Where things are
//
// One file per concern: engine.go (the Engine), lookup.go (a Policy
// compiled into the per-port lookup tables), decide.go (the per-packet
// path: knocks, grants), decidespa.go (the same for SPA packets, with the
// per-source rate limit), totp.go (TOTP doors), penalty.go (the penalty
// box), replay.go (the SPA replay cache), reload.go (Reload: a new policy,
// state kept, and no protected port ever opened by one: HeldClosed),
// revoke.go and restore.go (an operator's revoke; grants and used SPA
// packets saved by an earlier run), report.go (Grants, Stats, ActiveGrants,
// Sweep), shard.go (sharding and the generation a reload swaps),
// hashtable.go (the fixed-size tables all state lives in), portmask.go
// (which of a door's ports a grant covers), types.go (the Policy, Packet
// and Decision types), clock.go (the engine's clock, and the saturating
// deadlines every expiry is computed with). The fwknop wire format is
// verdict/fwknop.
//
// Two windows are decided in one place each: the TOTP acceptance window
// by TOTP.AcceptedSteps (totp.go), which the engine and the knock client
// both use, and the SPA replay cache's bound by replayUntil and
// Policy.MaxReplay (replay.go).
package verdict
