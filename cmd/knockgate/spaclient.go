package main

import (
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/user"
	"slices"
	"strings"
	"time"

	"github.com/knockgate/knockgate/verdict"
	spa "github.com/knockgate/knockgate/verdict/fwknop"
)

func cmdSPA(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("spa", "[--door NAME --config FILE | --key-base64 K --hmac-key-base64 H [--hmac-digest D] [--mode M] --port udp/62201] [--access tcp/22,...] [--allow-ip ADDR] [--timeout DUR] [--save-packet FILE] HOST",
		"Send one Single Packet Authorization packet to HOST (an IPv4 or IPv6\n"+
			"address or a name), as the fwknop client does: an access request for\n"+
			"--access, encrypted and HMAC-signed with the door's keys, in one UDP\n"+
			"datagram to the door's SPA port. Nothing comes back; check with a connect.\n\n"+
			"Keys, port, HMAC digest and mode come from a door of a policy file\n"+
			"(--door, --config; --access then defaults to the door's open list), or\n"+
			"from flags, given as `knockgate keygen` prints them. The packet asks for\n"+
			"access for --allow-ip, by default the address this host sends from\n"+
			"towards HOST, which is what the gate sees unless NAT is in between: behind\n"+
			"NAT give your public address. Unlike the stock client, this one can ask\n"+
			"for an IPv6 address (knockgate's one extension of fwknop's format).\n\n"+
			"Examples:\n"+
			"  knockgate spa --door nas --config /etc/knockgate/policy.hcl gw.example.net\n"+
			"  knockgate spa --key-base64 \"$K\" --hmac-key-base64 \"$H\" --access tcp/22 --timeout 1m 2001:db8::1", stderr)
	door := fs.String("door", "", "door `name` whose spa block gives keys, port, digest and mode (needs --config)")
	config := fs.String("config", "/etc/knockgate/policy.hcl", "policy `file` for --door")
	keyB64 := fs.String("key-base64", "", "encryption key as KEY_BASE64 (`base64`), without --door")
	hmacB64 := fs.String("hmac-key-base64", "", "HMAC key as HMAC_KEY_BASE64 (`base64`), without --door")
	digestName := fs.String("hmac-digest", "sha256", "HMAC `digest` (md5, sha1, sha256, sha384, sha512, sha3_256, sha3_512), without --door")
	modeName := fs.String("mode", "cbc", "encryption `mode` (cbc, ctr, cfb, ofb, ecb), without --door")
	portFlag := fs.String("port", "udp/62201", "SPA `port` to send to; with --door it overrides the door's (e.g. behind a port forward)")
	var access portList
	fs.Var(&access, "access", "comma-separated `ports` to ask for, e.g. tcp/22,tcp/443; with --door the default is every port the door opens")
	allowIP := fs.String("allow-ip", "", "`address` to ask access for; default: this host's source address towards HOST")
	timeout := fs.Duration("timeout", 0, "ask for a grant of this `duration` in whole seconds (fwknop -f); the door caps it at max_open_for. Default: the door's open_for")
	savePacket := fs.String("save-packet", "", "also write the payload to `file`, exactly the datagram body with no newline (for replay tests)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var (
		keys spa.Keys
		port verdict.Port
		err  error
	)
	if *door != "" {
		for _, name := range []string{"key-base64", "hmac-key-base64", "hmac-digest", "mode"} {
			if set[name] {
				return fmt.Errorf("give either --door or --%s, not both: the door's spa block sets it", name)
			}
		}
		d, err := spaDoor(*config, *door, stderr)
		if err != nil {
			return err
		}
		keys, port = d.SPA.Keys, d.SPA.Port
		if len(access) == 0 {
			access = d.Open
		}
		for _, p := range access {
			if !slices.Contains(d.Open, p) {
				return fmt.Errorf("door %q does not open %v (it opens %v); the gate would refuse the packet", *door, p, portList(d.Open).String())
			}
		}
	} else {
		if *keyB64 == "" || *hmacB64 == "" {
			return fmt.Errorf("no keys: give --door and --config, or --key-base64 and --hmac-key-base64 (HMAC is mandatory)")
		}
		if len(access) == 0 {
			return fmt.Errorf("no ports to ask for: give --access, such as --access tcp/22")
		}
		if keys.Enc, err = spa.DecodeKey(*keyB64); err != nil {
			return fmt.Errorf("invalid --key-base64: %w", err)
		}
		if keys.HMAC, err = spa.DecodeKey(*hmacB64); err != nil {
			return fmt.Errorf("invalid --hmac-key-base64: %w", err)
		}
		if keys.HMACDigest, err = spa.ParseDigest(*digestName); err != nil {
			return fmt.Errorf("invalid --hmac-digest: %w", err)
		}
		if keys.Mode, err = spa.ParseMode(*modeName); err != nil {
			return fmt.Errorf("invalid --mode: %w", err)
		}
		if keys.Mode == spa.Legacy {
			return fmt.Errorf("invalid --mode legacy: it cannot carry the HMAC knockgate requires")
		}
	}
	if *door == "" || set["port"] {
		if port, err = parseSPAPort(*portFlag); err != nil {
			return fmt.Errorf("invalid --port: %w", err)
		}
	}
	if err := keys.Validate(); err != nil {
		return err
	}

	msg := &spa.Message{
		Username:  localUsername(),
		Timestamp: time.Now(),
		Version:   "3.0.0",
		Type:      spa.TypeAccess,
		Ports:     make([]spa.Port, len(access)),
	}
	for i, p := range access {
		msg.Ports[i] = spa.Port{Proto: uint8(p.Proto), Num: p.Num}
	}
	if *timeout != 0 {
		secs := *timeout / time.Second
		if *timeout < 0 || *timeout%time.Second != 0 || secs < 1 || secs > 65536 {
			return fmt.Errorf("invalid --timeout %v: want whole seconds from 1s to 65536s", *timeout)
		}
		msg.Type, msg.ClientTimeout = spa.TypeTimeoutAccess, uint32(secs)
	}

	host, err := resolve(fs.Arg(0))
	if err != nil {
		return err
	}
	to := netip.AddrPortFrom(host, port.Num)
	// A connected UDP socket: connect(2) sends nothing, but makes the
	// kernel pick the route and so the source address the gate will see.
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		return fmt.Errorf("failed to open a udp socket to %s: %w", to, err)
	}
	defer conn.Close()
	if *allowIP == "" {
		msg.AllowIP = conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	} else {
		a, err := netip.ParseAddr(*allowIP)
		if err != nil || a.Zone() != "" {
			return fmt.Errorf("invalid --allow-ip %q: want an IPv4 or IPv6 address without a zone", *allowIP)
		}
		msg.AllowIP = a.Unmap()
	}

	payload, err := spa.EncodeRandom(msg, keys, rand.Reader)
	if err != nil {
		return fmt.Errorf("failed to build the SPA packet: %w", err)
	}
	if *savePacket != "" {
		if err := os.WriteFile(*savePacket, payload, 0o600); err != nil {
			return fmt.Errorf("failed to save the packet: %w", err)
		}
	}
	if _, err := conn.Write(payload); err != nil {
		return fmt.Errorf("failed to send the SPA packet to %s: %w", to, err)
	}
	what := fmt.Sprintf("access to %s for %s", access.String(), msg.AllowIP)
	if msg.ClientTimeout > 0 {
		what += fmt.Sprintf(" for %ds", msg.ClientTimeout)
	}
	fmt.Fprintf(stdout, "sent SPA packet to %s udp/%d: %s\n", host, port.Num, what)
	return nil
}

// spaDoor is policyDoor for a door that must have an spa block.
func spaDoor(config, name string, stderr io.Writer) (*verdict.Door, error) {
	d, err := policyDoor(config, name, stderr)
	if err != nil {
		return nil, err
	}
	if d.SPA == nil {
		return nil, fmt.Errorf("door %q of policy %s has no spa block", name, config)
	}
	return d, nil
}

// localUsername is the username field of the packet: the login name, as
// the fwknop client sends it. Nothing in knockgate checks it, so a name
// libfko would refuse (too long, or with one of "/\[]:;|=,+*?<>) is
// replaced rather than failing the packet.
func localUsername() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if name == "" || len(name) > 48 || strings.ContainsAny(name, `"/\[]:;|=,+*?<>`) {
		return "knockgate"
	}
	for _, c := range []byte(name) {
		if c < 0x20 || c > 0x7e {
			return "knockgate"
		}
	}
	return name
}
