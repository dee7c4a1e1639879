// Package verdict owns the gate's decisions: knock progress per source,
// grants, and the verdict for every queued packet.
//
// It is pure: no I/O, no clocks, no goroutines. The caller passes the time
// into every call (Decide, Sweep), so tests drive it with a fake clock and the
// daemon drives it with time.Now. Memory is bounded by the policy's caps: the
// tables are allocated whole when an Engine is built (and anew by Reload,
// for the new policy's caps) and never grow, so a flood of knocks from
// spoofed sources costs CPU, never memory.
package verdict
