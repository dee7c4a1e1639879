package cluster

import (
	"net/netip"
)

// Transport carries encoded messages between gateways and keeps the
// membership. memberlist.go has the implementation; the interface is what
// a second backend (such as NATS) would implement, leaving Store, codec
// and Node untouched.
type Transport interface {
	// Broadcast sends msg directly to every peer not known to be dead,
	// not to this gateway, and returns how many sends succeeded. A peer it misses is
	// repaired by the next full-state exchange.
	Broadcast(msg []byte) (sent int, err error)
	// Members returns the members the transport knows, this gateway
	// included.
	Members() []Member
	// Close leaves the cluster and releases the transport's sockets.
	Close() error
}

// Handler is what a Transport calls into; Node implements it. The methods
// are called from the transport's goroutines, concurrently.
type Handler interface {
	// Receive is a message a peer sent with Broadcast. The transport may
	// reuse msg once Receive returns.
	Receive(msg []byte)
	// LocalState returns this gateway's full state, for a peer.
	LocalState() []byte
	// MergeState merges a peer's LocalState.
	MergeState(msg []byte)
}

// MemberState is a member's liveness as the transport sees it.
type MemberState uint8

// Member states, as in memberlist.
const (
	MemberAlive MemberState = iota
	MemberSuspect
	MemberDead
	MemberLeft
)

func (s MemberState) String() string {
	switch s {
	case MemberAlive:
		return "alive"
	case MemberSuspect:
		return "suspect"
	case MemberDead:
		return "dead"
	case MemberLeft:
		return "left"
	}
	return "unknown"
}

// Member is a gateway of the cluster.
type Member struct {
	Name  string
	Addr  netip.AddrPort
	State MemberState
	// Self marks this gateway.
	Self bool
}
