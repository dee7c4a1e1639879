// Package integration holds knockgate's end-to-end tests. They need root and
// build with the integration tag: each test builds its own lab of network
// namespaces (clients, a gateway, a LAN host), loads the static steering
// rules into the gateway, runs the real knockgate binary there, and checks
// what a user would check with real clients (Debian's knock, nc, nmap):
// this connect succeeds, that one times out. Every test removes its
// namespaces and processes when it ends, also when it fails.
//
// Run them with `make test`, or
// `KNOCKGATE_BIN=bin/knockgate go test -tags integration ./integration/`.
package integration
