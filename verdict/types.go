package verdict

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/knockgate/knockgate/verdict/fwknop"
)

// Proto is a transport protocol a door can name. The values are the IANA
// protocol numbers so the packet parser can use them as they come off the
// wire.
type Proto uint8

// Protocols a door can name.
const (
	TCP Proto = 6
	UDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return "proto(" + strconv.Itoa(int(p)) + ")"
}

// TCP flags the engine looks at (RFC 9293 §3.1).
const (
	FlagFIN = 0x01
	FlagSYN = 0x02
	FlagRST = 0x04
	FlagACK = 0x10
)

// Port is a transport endpoint on the gateway, written "tcp/22" in policies.
type Port struct {
	Proto Proto
	Num   uint16
}

func (p Port) String() string { return p.Proto.String() + "/" + strconv.Itoa(int(p.Num)) }

// ParsePort parses "tcp/22" or "udp/8000". Port 0 is refused: it can be
// neither dialled nor knocked on.
func ParsePort(s string) (Port, error) {
	proto, num, ok := strings.Cut(s, "/")
	if !ok {
		return Port{}, fmt.Errorf("%q is not of the form proto/port, such as tcp/22", s)
	}
	var p Port
	switch strings.ToLower(proto) {
	case "tcp":
		p.Proto = TCP
	case "udp":
		p.Proto = UDP
	default:
		return Port{}, fmt.Errorf("%q: protocol %q is neither tcp nor udp", s, proto)
	}
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil || n == 0 || n > 65535 {
		return Port{}, fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, num)
	}
	p.Num = uint16(n)
	return p, nil
}

// Packet is what the engine needs to know of one queued packet. It is a
// plain value: the parser fills it from the packet bytes without allocating.
type Packet struct {
	Src, Dst         netip.Addr
	Proto            Proto
	SrcPort, DstPort uint16
	// TCPFlags holds the TCP flag byte (zero for UDP).
	TCPFlags uint8
	// Payload is the transport payload as far as it was copied to user
	// space; it aliases the receive buffer and is only valid during Decide.
	Payload []byte
}

// Verdict is what happens to a packet.
type Verdict uint8

// Verdicts. Drop is the zero value so a forgotten assignment fails closed.
const (
	Drop Verdict = iota
	Accept
)

func (v Verdict) String() string {
	if v == Accept {
		return "accept"
	}
	return "drop"
}

// ParseVerdict parses "accept" or "drop".
func ParseVerdict(s string) (Verdict, error) {
	switch s {
	case "accept":
		return Accept, nil
	case "drop":
		return Drop, nil
	}
	return Drop, fmt.Errorf("verdict %q is neither \"accept\" nor \"drop\"", s)
}

// Reason says why a packet got its verdict. It is a small closed set: the
// same values label metrics and log lines, so it must never carry data.
type Reason uint8

// Reasons.
const (
	// ReasonUnprotected: no door names the port; the policy's default applies.
	ReasonUnprotected Reason = iota
	// ReasonGranted: a protected port, and the source holds a live grant.
	ReasonGranted
	// ReasonNoGrant: a protected port, and the source holds no live grant.
	ReasonNoGrant
	// ReasonKnock: a knock that started or advanced a sequence.
	ReasonKnock
	// ReasonKnockRetransmit: a repeat of the knock just matched (a
	// retransmitted SYN); it neither advances nor resets.
	ReasonKnockRetransmit
	// ReasonKnockWrong: a packet to a knock port that did not fit any
	// sequence in progress or start a new one.
	ReasonKnockWrong
	// ReasonOpened: the last knock of a sequence; the grant is open.
	ReasonOpened
	// ReasonClosed: the last knock of a close sequence; the grant is revoked.
	ReasonClosed
	// ReasonNotAllowed: a knock from a source outside the door's allow_from.
	ReasonNotAllowed
	// ReasonMalformed: the packet could not be parsed (set by the caller).
	ReasonMalformed
	// ReasonSPAInvalid: a packet to an SPA port that is not a valid SPA
	// packet for any door there: bad length or alphabet, no door's HMAC
	// matches, or it does not decrypt and parse.
	ReasonSPAInvalid
	// ReasonSPAReplay: an SPA packet seen before.
	ReasonSPAReplay
	// ReasonSPARateLimited: the source sent SPA packets faster than the
	// per-source limit; the packet was not even checked.
	ReasonSPARateLimited
	// ReasonSPAStale: a valid SPA packet whose timestamp is outside max_age.
	ReasonSPAStale
	// ReasonSPASource: a valid SPA packet whose allow IP is not its source
	// (or is 0.0.0.0) while the door does not allow any source.
	ReasonSPASource
	// ReasonSPAPorts: a valid SPA packet asking for a port the door does
	// not open.
	ReasonSPAPorts
	// ReasonSPACommand: a valid SPA command message; knockgate runs none.
	ReasonSPACommand
	// ReasonPenalized: a knock or SPA packet from a source in the penalty
	// box, ignored unseen.
	ReasonPenalized
	// ReasonKnockReplay: the last knock of a TOTP sequence that another
	// source already completed in its step: a sniffed sequence, replayed.
	ReasonKnockReplay
	// ReasonClosedUntilRestart: a port that no door of the policy names,
	// but that a policy in force since the engine started protected: a
	// reload never opens a protected port (Engine.HeldClosed).
	ReasonClosedUntilRestart
	// ReasonClusterPeer: a packet from a cluster peer (Policy.ClusterPeers)
	// to the cluster port, accepted whatever Unprotected says, so the gate
	// never cuts its own fleet apart.
	ReasonClusterPeer
	numReasons
)

var reasonNames = [numReasons]string{
	ReasonUnprotected:        "unprotected",
	ReasonGranted:            "granted",
	ReasonNoGrant:            "no_grant",
	ReasonKnock:              "knock",
	ReasonKnockRetransmit:    "knock_retransmit",
	ReasonKnockWrong:         "knock_wrong",
	ReasonOpened:             "opened",
	ReasonClosed:             "closed",
	ReasonNotAllowed:         "not_allowed",
	ReasonMalformed:          "malformed",
	ReasonSPAInvalid:         "spa_invalid",
	ReasonSPAReplay:          "spa_replay",
	ReasonSPARateLimited:     "spa_rate_limited",
	ReasonSPAStale:           "spa_stale",
	ReasonSPASource:          "spa_source",
	ReasonSPAPorts:           "spa_ports",
	ReasonSPACommand:         "spa_command",
	ReasonPenalized:          "penalized",
	ReasonKnockReplay:        "knock_replay",
	ReasonClosedUntilRestart: "closed_until_restart",
	ReasonClusterPeer:        "cluster_peer",
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// Reasons lists every Reason, for metrics that must pre-create their labels.
func Reasons() []Reason {
	rs := make([]Reason, numReasons)
	for i := range rs {
		rs[i] = Reason(i)
	}
	return rs
}

// NoDoor marks a Decision field that names no door.
const NoDoor = -1

// Decision is the engine's answer for one packet.
type Decision struct {
	Verdict Verdict
	Reason  Reason
	// Door is the index of the door the reason concerns, or NoDoor.
	Door int
	// Reset is the index of a door whose sequence in progress this packet
	// broke, or NoDoor. A packet can reset one door and start another.
	Reset int
	// DoorName and ResetName name the doors Door and Reset index ("" for
	// NoDoor), in the policy the packet was decided under. A reload may
	// renumber doors between Decide and whoever logs or counts the
	// decision; the names stay true. They share the policy's strings, so
	// they cost no allocation.
	DoorName, ResetName string
	// GrantEnded is set when this packet used the last connection a
	// max_connections grant allowed: the grant is gone.
	GrantEnded bool
	// Banned is set when this packet's failure put its source in the
	// penalty box.
	Banned bool
}

// Door is one compiled door: a knock sequence or an SPA port (or both)
// that opens protected ports.
type Door struct {
	Name string
	// Sequence is the knock sequence; it may be empty when SPA is set.
	Sequence        []Port
	SequenceTimeout time.Duration
	// CloseSequence, when set, revokes the source's grant at once.
	CloseSequence []Port
	Open          []Port
	OpenFor       time.Duration
	// AllowFrom limits who may knock or send SPA packets; empty means
	// anyone.
	AllowFrom []netip.Prefix
	// SPA, when set, opens the door with Single Packet Authorization.
	SPA *SPA
	// TOTP, when set, derives the knock sequence from a secret and the
	// time; Sequence is then empty.
	TOTP *TOTP
	// MaxConnections, when above zero, ends a grant once it has admitted
	// that many new connections, so behind a shared address the window
	// closes the moment the knocker uses it.
	MaxConnections int
}

// SPA is a door's Single Packet Authorization: fwknop-compatible packets
// (verdict/fwknop) sent to Port.
type SPA struct {
	// Port is where SPA packets arrive, a UDP port. Several doors may share
	// it with different keys; the HMAC picks the door.
	Port Port
	Keys fwknop.Keys
	// MaxAge is how far a packet's timestamp may be from now, either way.
	MaxAge time.Duration
	// MaxOpenFor is the longest grant a client-timeout message may ask
	// for; zero means the door's OpenFor.
	MaxOpenFor time.Duration
	// AnySource lets a packet open the door for an address other than its
	// own source, including fwknop's 0.0.0.0 ("my source", client -s).
	// Off by default: a sniffed packet could then be replayed first from
	// elsewhere.
	AnySource bool
}

// MaxOpenPorts is the most ports one door may open: a grant records which
// of them it covers in a 64-bit mask.
const MaxOpenPorts = 64

// Policy is what the engine enforces. rules.Load builds it from HCL.
type Policy struct {
	Doors []Door
	// Unprotected is the verdict for ports that no door names.
	Unprotected Verdict
	// MaxSources caps the sources with a knock sequence in progress.
	MaxSources int
	// MaxGrants caps the live grants (one per source and door).
	MaxGrants int
	// Penalty is the penalty box for sources that fail too often.
	Penalty Penalty
	// MaxReplay caps the remembered SPA packets; replayUntil (replay.go)
	// says how long each is kept, and why that and this cap bound the
	// cache.
	MaxReplay int
	// ClusterPort, when not 0, is the port (TCP and UDP) where this
	// gateway's cluster peers reach it; packets to it from ClusterPeers
	// are accepted even when Unprotected is Drop. No door may use it.
	ClusterPort  uint16
	ClusterPeers []netip.Addr
}

// Penalty puts a source that fails Failures times within Within (wrong
// knocks, knocks from outside allow_from, bad or refused SPA packets) in a
// box for Ban: its knocks and SPA packets are ignored. Grants it already
// holds keep working. Failures of 0 turns it off.
type Penalty struct {
	Failures   int
	Within     time.Duration
	Ban        time.Duration
	MaxSources int
}

// DefaultPenalty is what a policy gets unless it says otherwise: well above
// what a person mistyping a knock reaches, far below a brute force.
var DefaultPenalty = Penalty{Failures: 10, Within: time.Minute, Ban: 10 * time.Minute, MaxSources: 10_000}

// Defaults for the caps. The tables are allocated whole at start (newGeneration);
// BenchmarkStatePerSource reports what a tracked source and a grant cost.
const (
	DefaultMaxSources = 100_000
	DefaultMaxGrants  = 10_000
	DefaultMaxReplay  = 100_000
)
