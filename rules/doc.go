// Package rules owns the policy language: it reads an HCL policy file,
// checks it, and compiles it into the verdict.Policy the engine enforces,
// plus the settings only the daemon needs: the NFQUEUE numbers, the
// fail-open mark, the state file, the control socket and the metrics
// address. It also renders, from those settings, the static iptables and
// ip6tables steering rules that queue new connections to the gate
// (Steering), so the rules and the policy they follow are kept in one place.
//
// Loading is in two stages. gohcl decodes the file into raw structs that
// still hold each attribute's expression, so that a bad port can be pointed
// at as the list element it is rather than as the whole list; then the raw
// structs are checked and compiled into a Policy.
//
// Everything the engine cannot enforce without guessing is refused here,
// once, at load time: a knock port that is also a protected port, two
// sequences that start with the same knock (the engine finds the sequence
// to track by its first knock), a close sequence that is the opening one.
// Every problem is reported, each with its file:line:col, not just the
// first, so one edit can fix them all.
//
// # Where things are
//
// policy.go holds Policy, Load and Parse; compiler.go the compiler's walk
// over a file; schema.go the raw structs gohcl decodes into. Each block
// has its reader: gateblock.go (gate and metrics), penaltyblock.go,
// doorblock.go, totpblock.go and spablock.go (a door's totp and spa
// blocks). crossdoor.go holds the checks across doors, values.go the
// readers of single values (ports, durations, numbers, paths),
// diagnostics.go the Error they all report into, steer.go the steering
// rules, statefile.go the files a policy names (ProtectedFiles), which
// its state file must not be. What the settings mean at run time is the engine's: a totp
// block's acceptance window is verdict.TOTP.AcceptedSteps, and how long
// the SPA replay cache keeps a packet (max_replay caps it) is verdict's
// replay.go.
package rules
