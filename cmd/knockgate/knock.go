package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knockgate/knockgate/verdict"
)

func cmdKnock(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("knock", "[--door NAME --config FILE] HOST [proto/port ...]",
		"Send a knock sequence to HOST (an IPv4 or IPv6 address or a name): a bare\n"+
			"TCP SYN for each tcp/N, one datagram for each udp/N. Ports come from the\n"+
			"command line, or from a door of a policy file with --door and --config;\n"+
			"for a door with a totp block, the sequence of the current time step.\n"+
			"Examples:\n"+
			"  knockgate knock 198.51.100.1 tcp/7000 udp/8000 tcp/9000\n"+
			"  knockgate knock --door ssh --config /etc/knockgate/policy.hcl gw.example.net", stdout, stderr)
	door := fs.String("door", "", "door `name` whose sequence to send (needs --config)")
	config := fs.String("config", "/etc/knockgate/policy.hcl", "policy `file` for --door")
	closeSeq := fs.Bool("close", false, "send the door's close_sequence instead, revoking the grant")
	delay := fs.Duration("delay", 50*time.Millisecond, "pause between knocks, so they arrive in order")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		return usageErrorf("missing HOST: the address or name to knock on")
	}
	host, rest := fs.Arg(0), fs.Args()[1:]

	var seq []verdict.Port
	switch {
	case *door != "" && len(rest) > 0:
		return fmt.Errorf("give either --door or ports, not both")
	case *door != "":
		d, err := policyDoor(*config, *door, stderr)
		if err != nil {
			return err
		}
		seq, _ = doorSequence(d, *closeSeq, time.Now())
		if len(seq) == 0 {
			return fmt.Errorf("door %q of policy %s has no such sequence", *door, *config)
		}
	case len(rest) == 0:
		return fmt.Errorf("no ports to knock on: give proto/port arguments or --door")
	default:
		for _, a := range rest {
			p, err := verdict.ParsePort(a)
			if err != nil {
				return fmt.Errorf("invalid knock: %w", err)
			}
			seq = append(seq, p)
		}
	}

	addr, err := resolve(host)
	if err != nil {
		return err
	}
	for i, k := range seq {
		if i > 0 && *delay > 0 {
			time.Sleep(*delay)
		}
		if err := knock(addr, k); err != nil {
			return fmt.Errorf("failed to knock on %v of %s: %w", k, addr, err)
		}
	}
	fmt.Fprintf(stdout, "knocked on %s: %v\n", addr, seq)
	return nil
}

func resolve(host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap(), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("failed to resolve %q: %w", host, err)
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("failed to resolve %q: no addresses", host)
	}
	return addrs[0].Unmap(), nil
}

// knock sends one knock. A TCP knock is a single SYN: the socket is
// non-blocking and closed right after connect starts, so the kernel sends
// no retransmit and, from SYN_SENT, no RST either.
func knock(addr netip.Addr, k verdict.Port) error {
	family := unix.AF_INET6
	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: int(k.Num), Addr: addr.As16()}
	if addr.Is4() {
		family = unix.AF_INET
		sa = &unix.SockaddrInet4{Port: int(k.Num), Addr: addr.As4()}
	}
	typ := unix.SOCK_DGRAM
	if k.Proto == verdict.TCP {
		typ = unix.SOCK_STREAM
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("failed to open socket: %w", err)
	}
	defer unix.Close(fd)
	if k.Proto == verdict.UDP {
		// One byte, as Debian's knock client sends: some middleboxes drop
		// empty datagrams.
		return unix.Sendto(fd, []byte{0}, 0, sa)
	}
	if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return err
	}
	return nil
}

// doorSequence is what a client knocks on d at now: its close sequence,
// the current step's sequence of a TOTP door (with the time it stops being
// accepted, the end of its acceptance window), or its sequence.
func doorSequence(d *verdict.Door, close bool, now time.Time) (seq []verdict.Port, goodUntil time.Time) {
	switch {
	case close:
		return d.CloseSequence, time.Time{}
	case d.TOTP != nil:
		c := d.TOTP.Counter(now)
		_, last := d.TOTP.AcceptedSteps(c)
		return d.TOTP.Sequence(c, nil), d.TOTP.StepEnds(last)
	}
	return d.Sequence, time.Time{}
}

// policyDoor loads the policy at config and returns its door named name.
func policyDoor(config, name string, stderr io.Writer) (*verdict.Door, error) {
	p, err := loadPolicy(config, stderr)
	if err != nil {
		return nil, err
	}
	for i := range p.Doors {
		if p.Doors[i].Name == name {
			return &p.Doors[i], nil
		}
	}
	return nil, fmt.Errorf("policy %s has no door %q", config, name)
}

func cmdSequence(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sequence", "--door NAME --config FILE",
		"Print a door's knock sequence, so that any stock knock client can send it.\n"+
			"For a door with a totp block that is the sequence of the current time\n"+
			"step (the previous step's is accepted too, so it stays good until the\n"+
			"end of the next step). Prints the ports as proto/port, then the same\n"+
			"as arguments of Debian's knock client.", stdout, stderr)
	door := fs.String("door", "", "door `name`")
	config := fs.String("config", "/etc/knockgate/policy.hcl", "policy `file`")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if err := requireFlags(map[string]string{"door": *door}); err != nil {
		return err
	}
	d, err := policyDoor(*config, *door, stderr)
	if err != nil {
		return err
	}
	seq, until := doorSequence(d, false, time.Now())
	if !until.IsZero() {
		defer fmt.Fprintf(stdout, "good until %s (the end of the next step)\n", until.Local().Format(time.RFC3339))
	}
	if len(seq) == 0 {
		return fmt.Errorf("door %q has no knock sequence (an SPA door? use knockgate spa)", *door)
	}
	knockArgs := make([]string, len(seq))
	for i, k := range seq {
		knockArgs[i] = fmt.Sprintf("%d:%s", k.Num, k.Proto)
	}
	fmt.Fprintln(stdout, strings.Trim(fmt.Sprint(seq), "[]"))
	fmt.Fprintf(stdout, "knock -d 100 HOST %s\n", strings.Join(knockArgs, " "))
	return nil
}
