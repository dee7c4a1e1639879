package verdict

import (
	"fmt"
	"net/netip"
	"slices"
)

// Port classes. A port is at most one of these: rules refuses a policy that
// uses a port both as a knock and as a protected port.
const (
	classNone uint8 = iota
	classKnock
	classProtected
	classSPA
	// classHeld is a port no door of the policy names that an earlier
	// policy since the engine started protected: it stays closed (hold).
	classHeld
	// classCluster is the cluster port: accepted from cluster peers.
	classCluster
)

// sequence is one knock sequence compiled for lookup: a door's open
// sequence or its close sequence, or one of a TOTP door's two slots.
type sequence struct {
	door    int
	close   bool
	ports   []Port // nil for a TOTP slot: its knocks change every step, see totpLive
	timeout int64  // nanoseconds
	// totp is the index in compiled.totp of the TOTP door this is a slot
	// of, and slot which one; -1 for a fixed sequence.
	totp int32
	slot uint8
}

// totpDoor is a TOTP door and its two sequence slots.
type totpDoor struct {
	door  int
	slots [totpSteps]int
	// live is the only part of a compiled policy that changes after
	// compile: the derived sequences, rotated every step. It is a pointer
	// so compiled stays a value that is never copied while in use.
	live *totpLive
}

// opener is a door that opens a port, and which of its ports it is.
type opener struct {
	door int32
	bit  uint8
	mix  uint64 // doorMix(door): a grant's hash is its source's, xored with it
}

// compiled is a policy turned into lookup tables. It is immutable once
// built (but for the TOTP doors' live sequences, which have their own
// synchronisation), so Decide reads it without a lock, and a reload
// compiles the new one outside every lock and swaps it in.
type compiled struct {
	policy Policy
	seqs   []sequence
	*portTables
	// openLists holds, per protected port, the doors that open it;
	// spaLists, per SPA port, the doors that listen there. Both start
	// with an empty list, the one index 0 (no such port) finds.
	openLists [][]opener
	spaLists  [][]int
	totp      []totpDoor
	doorIndex map[string]int
	// held lists the ports of classHeld, in order, for HeldClosed.
	held []Port
	// peers are the cluster peers' addresses, unmapped.
	peers []netip.Addr
	// ring receives the events a cluster shares (shared.go); the engine
	// sets it on every policy it compiles.
	ring *sharedRing
}

// portTables are the lookup tables indexed by protocol (0 tcp, 1 udp) and
// port, so the per-packet path is array indexing rather than map lookups.
// A port has one class, so one index array serves every class: at is
// what the class needs to go on. At 640 KB they are most of a compiled
// policy, so a reload compiles into those of the policy before the last
// (Engine.spare) instead of allocating them anew.
type portTables struct {
	class [2][65536]uint8
	// at is, for a knock port, 1 + index into seqs of the sequence the
	// port starts (0 if none does), or, in a TOTP door's range,
	// -(1 + index into totp): which slot starts there changes every step,
	// see firstSeq; for a protected port, the index into openLists; for an
	// SPA port, the index into spaLists.
	at [2][65536]int32
}

func protoIndex(p Proto) int {
	switch p {
	case TCP:
		return 0
	case UDP:
		return 1
	}
	return -1
}

// compile compiles p, into the lookup tables pt when it is not nil (they
// are cleared first).
func compile(p Policy, pt *portTables) (*compiled, error) {
	if pt == nil {
		pt = new(portTables)
	} else {
		*pt = portTables{}
	}
	if p.MaxSources <= 0 {
		p.MaxSources = DefaultMaxSources
	}
	if p.MaxGrants <= 0 {
		p.MaxGrants = DefaultMaxGrants
	}
	if p.MaxReplay <= 0 {
		p.MaxReplay = DefaultMaxReplay
	}
	e := &compiled{policy: p, portTables: pt, openLists: [][]opener{nil}, spaLists: [][]int{nil}, doorIndex: make(map[string]int, len(p.Doors))}
	for di, d := range p.Doors {
		if _, dup := e.doorIndex[d.Name]; dup {
			return nil, fmt.Errorf("door %q is defined twice", d.Name)
		}
		e.doorIndex[d.Name] = di
		if (len(d.Sequence) == 0 && d.SPA == nil && d.TOTP == nil) || len(d.Open) == 0 {
			return nil, fmt.Errorf("door %q needs a sequence, a totp or an spa block, and ports to open", d.Name)
		}
		if d.TOTP != nil && len(d.Sequence) > 0 {
			return nil, fmt.Errorf("door %q has both a sequence and a totp block", d.Name)
		}
		if d.MaxConnections < 0 {
			return nil, fmt.Errorf("door %q: max_connections is negative", d.Name)
		}
		if len(d.Open) > MaxOpenPorts {
			return nil, fmt.Errorf("door %q opens %d ports, more than %d", d.Name, len(d.Open), MaxOpenPorts)
		}
		if ((len(d.Sequence) > 0 || d.TOTP != nil) && d.SequenceTimeout <= 0) || d.OpenFor <= 0 {
			return nil, fmt.Errorf("door %q needs a positive sequence_timeout and open_for", d.Name)
		}
		if err := e.compileSPA(di, d); err != nil {
			return nil, err
		}
		if len(d.Sequence) > 0xffff || len(d.CloseSequence) > 0xffff {
			return nil, fmt.Errorf("door %q has a sequence longer than 65535 knocks", d.Name)
		}
		for _, s := range []struct {
			ports []Port
			close bool
		}{{d.Sequence, false}, {d.CloseSequence, true}} {
			if len(s.ports) == 0 {
				continue
			}
			for _, k := range s.ports {
				pi := protoIndex(k.Proto)
				if pi < 0 {
					return nil, fmt.Errorf("door %q: knock %v has an unsupported protocol", d.Name, k)
				}
				if e.class[pi][k.Num] == classSPA {
					return nil, fmt.Errorf("door %q: %v is both a knock and an SPA port", d.Name, k)
				}
				e.class[pi][k.Num] = classKnock
			}
			k0 := s.ports[0]
			pi := protoIndex(k0.Proto)
			if prev := e.at[pi][k0.Num]; prev != 0 {
				return nil, fmt.Errorf("door %q: a sequence of door %q already starts with %v",
					d.Name, p.Doors[e.seqs[prev-1].door].Name, k0)
			}
			e.seqs = append(e.seqs, sequence{
				door: di, close: s.close, ports: slices.Clone(s.ports), timeout: int64(d.SequenceTimeout), totp: -1,
			})
			e.at[pi][k0.Num] = int32(len(e.seqs))
		}
	}
	// TOTP ranges are reserved whole, after every other knock is known, so
	// a clash with any rule shows up here or below as a protected port.
	for di, d := range p.Doors {
		if d.TOTP == nil {
			continue
		}
		if err := d.TOTP.validate(); err != nil {
			return nil, fmt.Errorf("door %q: %w", d.Name, err)
		}
		pi := protoIndex(d.TOTP.Proto)
		for n := int(d.TOTP.Lo); n <= int(d.TOTP.Hi); n++ {
			if e.class[pi][n] != classNone {
				return nil, fmt.Errorf("door %q: TOTP range %v/%d-%d overlaps another rule at %v/%d", d.Name, d.TOTP.Proto, d.TOTP.Lo, d.TOTP.Hi, d.TOTP.Proto, n)
			}
			e.class[pi][n] = classKnock
			e.at[pi][n] = -int32(len(e.totp) + 1)
		}
		td := totpDoor{door: di, live: new(totpLive)}
		for i := range td.slots {
			e.seqs = append(e.seqs, sequence{door: di, timeout: int64(d.SequenceTimeout), totp: int32(len(e.totp)), slot: uint8(i)})
			td.slots[i] = len(e.seqs) - 1
		}
		e.totp = append(e.totp, td)
	}
	for di, d := range p.Doors {
		for bit, o := range d.Open {
			pi := protoIndex(o.Proto)
			if pi < 0 {
				return nil, fmt.Errorf("door %q: port %v has an unsupported protocol", d.Name, o)
			}
			switch e.class[pi][o.Num] {
			case classKnock:
				return nil, fmt.Errorf("door %q: %v is both a knock and a protected port", d.Name, o)
			case classSPA:
				return nil, fmt.Errorf("door %q: %v is both an SPA port and a protected port", d.Name, o)
			}
			e.class[pi][o.Num] = classProtected
			li := e.at[pi][o.Num]
			if li == 0 {
				e.openLists = append(e.openLists, nil)
				li = int32(len(e.openLists) - 1)
				e.at[pi][o.Num] = li
			}
			op := opener{door: int32(di), bit: uint8(bit), mix: doorMix(uint32(di))}
			if slices.ContainsFunc(e.openLists[li], func(x opener) bool { return x.door == op.door }) {
				return nil, fmt.Errorf("door %q opens %v twice", d.Name, o)
			}
			e.openLists[li] = append(e.openLists[li], op)
		}
	}
	if p.ClusterPort != 0 {
		for pi := range e.class {
			if e.class[pi][p.ClusterPort] != classNone {
				return nil, fmt.Errorf("cluster port %d is also a knock, SPA or protected port", p.ClusterPort)
			}
			e.class[pi][p.ClusterPort] = classCluster
		}
		for _, a := range p.ClusterPeers {
			e.peers = append(e.peers, a.Unmap())
		}
	}
	return e, nil
}

// peer reports whether src is a cluster peer. The list is a few
// addresses: a scan costs less than a hash, and allocates nothing.
func (c *compiled) peer(src netip.Addr) bool {
	for _, a := range c.peers {
		if a == src {
			return true
		}
	}
	return false
}

func (c *compiled) allowed(door int, src netip.Addr) bool {
	from := c.policy.Doors[door].AllowFrom
	if len(from) == 0 {
		return true
	}
	for _, p := range from {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

func (c *compiled) compileSPA(di int, d Door) error {
	if d.SPA == nil {
		return nil
	}
	s := d.SPA
	if s.Port.Proto != UDP || s.Port.Num == 0 {
		return fmt.Errorf("door %q: SPA port %v is not a UDP port", d.Name, s.Port)
	}
	if s.MaxAge <= 0 {
		return fmt.Errorf("door %q: SPA max_age must be above zero", d.Name)
	}
	if s.Keys.AllowNoHMAC || len(s.Keys.HMAC) == 0 {
		return fmt.Errorf("door %q: SPA needs an HMAC key", d.Name)
	}
	if err := s.Keys.Validate(); err != nil {
		return fmt.Errorf("door %q: %w", d.Name, err)
	}
	pi := protoIndex(UDP)
	switch c.class[pi][s.Port.Num] {
	case classKnock:
		return fmt.Errorf("door %q: %v is both a knock and an SPA port", d.Name, s.Port)
	case classProtected:
		return fmt.Errorf("door %q: %v is both a protected and an SPA port", d.Name, s.Port)
	}
	c.class[pi][s.Port.Num] = classSPA
	li := c.at[pi][s.Port.Num]
	if li == 0 {
		c.spaLists = append(c.spaLists, nil)
		li = int32(len(c.spaLists) - 1)
		c.at[pi][s.Port.Num] = li
	}
	c.spaLists[li] = append(c.spaLists[li], di)
	return nil
}
