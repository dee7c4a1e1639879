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
package rules
