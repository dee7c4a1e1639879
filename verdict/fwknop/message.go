package fwknop

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// MessageType is field 5 of the plaintext (spec §3.2).
type MessageType uint8

// Message types, with libfko's values.
const (
	// TypeCommand asks the server to run a command (client -C). fwknopd needs
	// ENABLE_CMD_EXEC for it.
	TypeCommand MessageType = iota
	// TypeAccess asks for access to ports (client -A); the default.
	TypeAccess
	// TypeNATAccess asks for a DNAT forward to an internal host (client -N).
	TypeNATAccess
	// TypeTimeoutAccess is TypeAccess with a client timeout (client -f).
	TypeTimeoutAccess
	// TypeTimeoutNATAccess is TypeNATAccess with a client timeout.
	TypeTimeoutNATAccess
	// TypeLocalNATAccess asks for a DNAT to a port on the server itself
	// (client --nat-local).
	TypeLocalNATAccess
	// TypeTimeoutLocalNATAccess is TypeLocalNATAccess with a client timeout.
	TypeTimeoutLocalNATAccess
	numTypes
)

var typeInfo = [numTypes]struct {
	name string
	// fields: how many fields may follow the type field (the message
	// included, the inner digest not): libfko's per-type field-count limit.
	fields int
}{
	TypeCommand:               {"command", 2},
	TypeAccess:                {"access", 2},
	TypeNATAccess:             {"nat_access", 3},
	TypeTimeoutAccess:         {"client_timeout_access", 3},
	TypeTimeoutNATAccess:      {"client_timeout_nat_access", 4},
	TypeLocalNATAccess:        {"local_nat_access", 3},
	TypeTimeoutLocalNATAccess: {"client_timeout_local_nat_access", 4},
}

func (t MessageType) valid() bool { return t < numTypes }

func (t MessageType) String() string {
	if t.valid() {
		return typeInfo[t].name
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

// HasNAT reports whether the type carries a NAT field (types 2, 4, 5, 6).
func (t MessageType) HasNAT() bool {
	switch t {
	case TypeNATAccess, TypeTimeoutNATAccess, TypeLocalNATAccess, TypeTimeoutLocalNATAccess:
		return true
	}
	return false
}

// HasTimeout reports whether the type carries a client timeout (3, 4, 6).
func (t MessageType) HasTimeout() bool {
	switch t {
	case TypeTimeoutAccess, TypeTimeoutNATAccess, TypeTimeoutLocalNATAccess:
		return true
	}
	return false
}

// LocalNAT reports whether the NAT target is the server itself (5, 6).
func (t MessageType) LocalNAT() bool {
	return t == TypeLocalNATAccess || t == TypeTimeoutLocalNATAccess
}

// IANA protocol numbers of the two protocols an access message can name.
// They are the values of verdict.Proto, so verdict.Proto(p.Proto) converts.
// (This package keeps its own Port type so that verdict may import it.)
const (
	ProtoTCP uint8 = 6
	ProtoUDP uint8 = 17
)

// Port is one "proto/port" of an access message.
type Port struct {
	Proto uint8 // ProtoTCP or ProtoUDP
	Num   uint16
}

func (p Port) String() string {
	proto := "proto(" + strconv.Itoa(int(p.Proto)) + ")"
	switch p.Proto {
	case ProtoTCP:
		proto = "tcp"
	case ProtoUDP:
		proto = "udp"
	}
	return proto + "/" + strconv.Itoa(int(p.Num))
}

// Message is a decoded SPA plaintext (spec §3).
type Message struct {
	// Random is the 16 decimal digits of field 1.
	Random string
	// Username is who the client says it is (-U, or the local login name).
	// Only fwknopd's REQUIRE_USERNAME looks at it; it is not authenticated
	// beyond the keys.
	Username string
	// Timestamp is the client's clock, whole seconds. See CheckAge.
	Timestamp time.Time
	// Version is the client's protocol version, "3.0.0"; never checked.
	Version string
	Type    MessageType

	// Access is the decoded message field as sent:
	// "<allowIP>,<proto>/<port>[,…]" or, for TypeCommand,
	// "<allowIP>,<command>". Encode uses it when set.
	Access string
	// AllowIP is the address to open the gate for. 0.0.0.0 (client -s)
	// means "the packet's source address" and is open to a man in the
	// middle; fwknopd refuses it under REQUIRE_SOURCE_ADDRESS (spec §3.3).
	// It may also be an IPv6 address, which only knockgate's own client
	// sends (see the package comment); never an IPv4-mapped one.
	AllowIP netip.Addr
	// Ports are the requested ports, for every type but TypeCommand. Only
	// tcp and udp pass libfko's validator.
	Ports []Port
	// Command is the text after the allow IP, for TypeCommand only.
	Command string

	// NAT is the decoded NAT field, "<host>,<port>", for the types where
	// HasNAT is true; NATHost and NATPort are its parts. The host may be a
	// name. For local NAT, the access message's port may be a
	// --nat-port stand-in, while NATPort is the real service port.
	NAT     string
	NATHost string
	NATPort uint16

	// ServerAuth is the optional server_auth field. The stock client never
	// sends it and fwknopd ignores it for Rijndael packets; a server may
	// refuse packets that carry it.
	ServerAuth string
	// ClientTimeout is the requested access duration in seconds, for the
	// types where HasTimeout is true (at most 65536). fwknopd caps it at
	// MAX_FW_TIMEOUT.
	ClientTimeout uint32

	// Digest is the inner digest's algorithm, learnt from its length.
	Digest Digest
	// DigestB64 is the inner digest as sent, unpadded base64. It is not the
	// replay key: see ReplayKey.
	DigestB64 string

	replay [32]byte
}

// ReplayKey is the key of fwknopd's replay cache (spec §9): SHA-256 of the
// payload text exactly as received, tag included. It needs no keys, so a
// server can look it up before any cryptography (fwknopd does) and store it
// once the packet authenticates, before the policy checks, so that a
// refused packet is used up too. It is canonical only because Prefilter
// refuses '=' and Decode refuses non-canonical base64 and payloads carrying
// the stripped prefix; without those checks (and without an HMAC) one
// request can be re-sent under many keys.
func ReplayKey(payload []byte) [32]byte { return sha256.Sum256(payload) }

// ReplayKey returns the replay-cache key of the payload the message was
// decoded from; see the function ReplayKey. It is zero for a Message that
// did not come from Decode.
func (m *Message) ReplayKey() [32]byte { return m.replay }

// ReplayDigest is the replay key as fwknopd writes it in digest.cache:
// unpadded base64.
func (m *Message) ReplayDigest() string {
	return base64.RawStdEncoding.EncodeToString(m.replay[:])
}

// Timeout is ClientTimeout as a duration; zero when the client asked for
// none.
func (m *Message) Timeout() time.Duration {
	return time.Duration(m.ClientTimeout) * time.Second
}

// CheckAge reports an ErrAge error when the timestamp is more than maxAge
// from now, in either direction: fwknopd's check is symmetric, so future
// timestamps count too (spec §8 step 6; its default window is 120 s). Like
// fwknopd it works in whole seconds.
func (m *Message) CheckAge(now time.Time, maxAge time.Duration) error {
	// In seconds, not Durations: a Duration overflows past 292 years, and
	// a hand-made Message may hold any time.
	diff := now.Unix() - m.Timestamp.Unix()
	if diff < 0 {
		diff = -diff
	}
	if diff > int64(maxAge/time.Second) {
		if now.Unix() < m.Timestamp.Unix() {
			return fmt.Errorf("%w: timestamp is %d s in the future, more than %v", ErrAge, diff, maxAge)
		}
		return fmt.Errorf("%w: timestamp is %d s old, more than %v", ErrAge, diff, maxAge)
	}
	return nil
}

// Field limits libfko's decoder enforces (spec §3.1, §7). Base64 limits
// are in characters of text.
const (
	randomLen       = 16
	maxUsernameB64  = 64
	maxTimestampLen = 12
	maxVersionLen   = 8
	maxTypeLen      = 2
	maxFieldB64     = 256 // message, NAT access, server auth
	maxNATHostLen   = 254
	maxClientTimout = 65536
	maxTimestamp    = 1<<31 - 1 // a non-negative C int
)

// parseFields parses the plaintext without its inner digest (the "encoded
// data", fields 1–9 joined by ':') as libfko does (spec §3.4). Errors are
// plain; the caller wraps them in ErrFields.
func parseFields(s string, m *Message) error {
	var f [5]string
	rest := s
	for i := range f {
		var ok bool
		f[i], rest, ok = strings.Cut(rest, ":")
		if !ok {
			return errors.New("fewer than 6 fields")
		}
	}

	// 1: random value. Decrypt already checked 16 digits and a colon.
	if len(f[0]) != randomLen || !allDigits(f[0]) {
		return errors.New("random value is not 16 digits")
	}
	m.Random = f[0]

	// 2: username.
	user, err := decodeField("username", f[1], maxUsernameB64)
	if err != nil {
		return err
	}
	if err := checkUsername(user); err != nil {
		return err
	}
	m.Username = user

	// 3: timestamp.
	if len(f[2]) > maxTimestampLen {
		return fmt.Errorf("timestamp is longer than %d digits", maxTimestampLen)
	}
	ts, ok := parseDecimal(f[2], maxTimestamp)
	if !ok {
		return fmt.Errorf("timestamp %q is not a number from 0 to %d", f[2], maxTimestamp)
	}
	m.Timestamp = time.Unix(int64(ts), 0).UTC()

	// 4: version; libfko checks only its length.
	if len(f[3]) == 0 || len(f[3]) > maxVersionLen {
		return fmt.Errorf("version is not 1 to %d characters", maxVersionLen)
	}
	m.Version = f[3]

	// 5: message type.
	if len(f[4]) > maxTypeLen {
		return errors.New("message type is longer than 2 digits")
	}
	t, ok := parseDecimal(f[4], uint64(numTypes-1))
	if !ok {
		return fmt.Errorf("message type %q is not a number from 0 to %d", f[4], numTypes-1)
	}
	m.Type = MessageType(t)
	if n := strings.Count(rest, ":") + 1; n > typeInfo[m.Type].fields {
		return fmt.Errorf("%d fields follow a type %d message, more than %d", n, m.Type, typeInfo[m.Type].fields)
	}

	// 6: the message.
	msgB64, rest, more := strings.Cut(rest, ":")
	msg, err := decodeField("message", msgB64, maxFieldB64)
	if err != nil {
		return err
	}
	if err := parseAccess(msg, m); err != nil {
		return err
	}

	// 7: NAT access, for the NAT types only.
	if m.Type.HasNAT() {
		if !more {
			return errors.New("NAT access is missing")
		}
		var natB64 string
		natB64, rest, more = strings.Cut(rest, ":")
		nat, err := decodeField("NAT access", natB64, maxFieldB64)
		if err != nil {
			return err
		}
		if err := parseNAT(nat, m); err != nil {
			return err
		}
	}

	// 8, 9: what is left (rest) is [server_auth] and, for the timeout
	// types, the client timeout. A timeout type always has the timeout
	// last; any other type can only have server_auth here.
	if more && rest == "" {
		return errors.New("empty field after the message")
	}
	if m.Type.HasTimeout() {
		if !more {
			return errors.New("client timeout is missing")
		}
		auth, to, hasAuth := strings.Cut(rest, ":")
		if !hasAuth {
			to = rest
		}
		n, ok := parseDecimal(to, maxClientTimout)
		if !ok {
			return fmt.Errorf("client timeout %q is not a number from 0 to %d", to, maxClientTimout)
		}
		m.ClientTimeout = uint32(n)
		if !hasAuth {
			return nil
		}
		rest = auth
	} else if !more {
		return nil
	}
	auth, err := decodeField("server auth", rest, maxFieldB64)
	if err != nil {
		return err
	}
	m.ServerAuth = auth
	return nil
}

// decodeField decodes a base64 field of 1–max characters as libfko does:
// it stops at the first '=', ignores a dangling last character and non-zero
// trailing bits (spec §2). The client always writes canonical text; the
// leniency costs nothing here because the field sits inside the checked
// ciphertext. Only printable ASCII may come out.
func decodeField(name, s string, max int) (string, error) {
	if len(s) == 0 || len(s) > max {
		return "", fmt.Errorf("%s is not 1 to %d base64 characters", name, max)
	}
	if i := strings.IndexByte(s, '='); i >= 0 {
		s = s[:i]
	}
	if len(s)%4 == 1 {
		s = s[:len(s)-1]
	}
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		return "", fmt.Errorf("%s is not base64", name)
	}
	if !printable(b) {
		return "", fmt.Errorf("%s holds bytes that are not printable ASCII", name)
	}
	return string(b), nil
}

// checkUsername applies libfko's username rule: non-empty, and every
// character alphanumeric or printable but none of the characters Windows
// forbids in account names.
func checkUsername(u string) error {
	if u == "" {
		return errors.New("username is empty")
	}
	if i := strings.IndexAny(u, `"/\[]:;|=,+*?<>`); i >= 0 {
		return fmt.Errorf("username has the forbidden character %q", u[i])
	}
	return nil
}

// parseAccess parses and validates the message field (spec §3.3).
func parseAccess(msg string, m *Message) error {
	ipText, rest, ok := strings.Cut(msg, ",")
	if !ok || rest == "" {
		return fmt.Errorf("message %q is not <allow IP>,<ports or command>", msg)
	}
	ip, err := parseAllowIP(ipText)
	if err != nil {
		return err
	}
	m.Access, m.AllowIP = msg, ip
	if m.Type == TypeCommand {
		m.Command = rest
		return nil
	}
	m.Ports = make([]Port, 0, strings.Count(rest, ",")+1)
	for spec := range strings.SplitSeq(rest, ",") {
		p, err := parsePortSpec(spec)
		if err != nil {
			return err
		}
		m.Ports = append(m.Ports, p)
	}
	return nil
}

// parseAllowIP accepts fwknop's dotted-quad IPv4 address, 7–15
// characters, and, as knockgate's one extension of the format, an IPv6
// address (see the package comment).
//
// The IPv4 form is stricter than libfko's inet_aton about leading zeros,
// which the stock client never writes. The IPv6 form is hex digits and
// colons only, so no zone ("%eth0"), no embedded dotted quad and therefore
// no IPv4-mapped address: an IPv4 client says so in the dotted form, and
// each address has exactly one family here. "::" is refused: fwknop's
// "use my source address" is 0.0.0.0, and giving "::" the same meaning
// would add a second spelling of that weaker request.
func parseAllowIP(s string) (netip.Addr, error) {
	if strings.Contains(s, ":") {
		return parseAllowIPv6(s)
	}
	if len(s) < 7 || len(s) > 15 || strings.Count(s, ".") != 3 || strings.Trim(s, "0123456789.") != "" {
		return netip.Addr{}, fmt.Errorf("allow IP %q is not a dotted-quad IPv4 address or an IPv6 address", s)
	}
	ip, err := netip.ParseAddr(s)
	if err != nil || !ip.Is4() {
		return netip.Addr{}, fmt.Errorf("allow IP %q is not a dotted-quad IPv4 address", s)
	}
	return ip, nil
}

// maxIPv6Len is the longest IPv6 text without a zone or a dotted quad:
// eight groups of four hex digits and seven colons.
const maxIPv6Len = 39

func parseAllowIPv6(s string) (netip.Addr, error) {
	if len(s) < 2 || len(s) > maxIPv6Len || strings.Trim(s, "0123456789abcdefABCDEF:") != "" {
		return netip.Addr{}, fmt.Errorf("allow IP %q is not an IPv6 address of hex digits and colons", s)
	}
	ip, err := netip.ParseAddr(s)
	if err != nil || !ip.Is6() || ip.Is4In6() {
		return netip.Addr{}, fmt.Errorf("allow IP %q is not an IPv6 address", s)
	}
	if ip.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("allow IP %q: the unspecified IPv6 address is refused; 0.0.0.0 asks for the packet's source", s)
	}
	return ip, nil
}

// parsePortSpec parses "tcp/22". libfko compares the protocol without
// regard to case; it also names icmp and none, but its own length check
// makes them fail, so only tcp and udp ever pass (spec §3.3).
func parsePortSpec(s string) (Port, error) {
	proto, num, ok := strings.Cut(s, "/")
	if !ok {
		return Port{}, fmt.Errorf("port %q is not proto/port", s)
	}
	var p Port
	switch {
	case strings.EqualFold(proto, "tcp"):
		p.Proto = ProtoTCP
	case strings.EqualFold(proto, "udp"):
		p.Proto = ProtoUDP
	default:
		return Port{}, fmt.Errorf("port %q: protocol is neither tcp nor udp", s)
	}
	n, ok := parseDecimal(num, 65535)
	if !ok || len(num) > 5 || n == 0 {
		return Port{}, fmt.Errorf("port %q: port is not a number from 1 to 65535", s)
	}
	p.Num = uint16(n)
	return p, nil
}

// parseNAT parses the NAT field "<host>,<port>" (spec §3.1 field 7).
func parseNAT(s string, m *Message) error {
	host, port, ok := strings.Cut(s, ",")
	if !ok || strings.Contains(port, ",") {
		return fmt.Errorf("NAT access %q is not <host>,<port>", s)
	}
	if host == "" || len(host) > maxNATHostLen || strings.ContainsAny(host, ` /?"'\`) {
		return fmt.Errorf("NAT access %q: host is not 1 to %d characters without space / ? \" ' \\", s, maxNATHostLen)
	}
	n, ok := parseDecimal(port, 65535)
	if !ok || n == 0 {
		return fmt.Errorf("NAT access %q: port is not a number from 1 to 65535", s)
	}
	m.NAT, m.NATHost, m.NATPort = s, host, uint16(n)
	return nil
}

// parseDecimal parses a non-empty run of ASCII digits no larger than max.
// Leading zeros are allowed, as strtol allows them.
func parseDecimal(s string, max uint64) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
		if n > max {
			return 0, false
		}
	}
	return n, true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func printable[T string | []byte](b T) bool {
	for i := 0; i < len(b); i++ {
		if b[i] < 0x20 || b[i] > 0x7e {
			return false
		}
	}
	return true
}
