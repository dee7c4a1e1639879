// Package cluster owns the state that gateways of one fleet share: grants,
// revokes, SPA replay digests, used TOTP sequences and penalty bans. It
// merges that state, encodes it for the wire and keeps the membership.
//
// Everything shared expires, so the Store merges it as a state-based CRDT:
// a merge is commutative, associative and idempotent, so an update may
// arrive twice, late or out of order, and every gateway that has seen the
// same updates holds the same state. A Node sends each local change directly
// to every live peer (a gossip round costs hundreds of milliseconds; a
// direct send about 0.1 ms), and the transport's periodic full-state
// push/pull repairs whatever a direct send missed, such as during a
// partition.
//
// The transport is a small interface (Transport, Handler); memberlist.go
// implements it with hashicorp/memberlist, whose keyring (AES-GCM) keeps a
// gateway without the shared key from joining, reading or injecting.
// Messages from members are still checked: malformed, oversized or stale
// messages, and updates beyond what the receiving gateway's own policy
// allows, are refused and counted by reason, never merged.
//
// Knock progress and max_connections counts stay local: the package knows
// nothing of packets, the engine, HCL or metrics. The daemon feeds local
// changes to Node.Publish, applies the effective changes that Config.Apply
// receives to its engine, sweeps with Node.Expire on its ticker, and exports
// Node.Stats.
package cluster
