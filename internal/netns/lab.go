package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
)

// Run runs name with args, with stdin (when not "") on its standard
// input, and kills it after timeout: a lab step that hangs must not hang
// the test or the benchmark. It returns the command's combined output;
// an error names the command and carries that output.
func Run(timeout time.Duration, stdin, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// stepTimeout bounds each `ip` command that builds a lab.
const stepTimeout = 20 * time.Second

// Lab is a set of network namespaces made together and removed together:
// the private network of one test or one benchmark run. The zero value is
// an empty lab.
type Lab struct {
	mu    sync.Mutex
	names []string
}

// Add creates namespace name with its loopback interface up, and keeps it
// for Close.
func (l *Lab) Add(name string) error {
	if _, err := Run(stepTimeout, "", "ip", "netns", "add", name); err != nil {
		return err
	}
	l.mu.Lock()
	l.names = append(l.names, name)
	l.mu.Unlock()
	_, err := Run(stepTimeout, "", "ip", "-n", name, "link", "set", "lo", "up")
	return err
}

// Close removes every namespace Add made, the last first, with whatever
// still runs in them (Remove). It returns every error, joined, and can be
// called again.
func (l *Lab) Close() error {
	l.mu.Lock()
	names := l.names
	l.names = nil
	l.mu.Unlock()
	var errs []error
	for _, name := range slices.Backward(names) {
		if err := Remove(name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// End is one end of a veth pair: its namespace, its interface name there,
// an optional MAC address and the addresses it is given.
type End struct {
	NS, Dev string
	MAC     string // "" lets the kernel choose
	Addrs   []netip.Prefix
}

// Veth joins two namespaces with a veth pair and brings both ends up with
// their addresses. The pair is made inside a's namespace and its peer
// moved to b's in the same step, so no interface ever appears in the
// caller's namespace. IPv6 addresses are added without duplicate address
// detection (nodad), so they are usable at once instead of after DAD's
// delay (RFC 4862 §5.4).
func Veth(a, b End) error {
	args := []string{"-n", a.NS, "link", "add", a.Dev}
	if a.MAC != "" {
		args = append(args, "address", a.MAC)
	}
	args = append(args, "type", "veth", "peer", "name", b.Dev, "netns", b.NS)
	if b.MAC != "" {
		args = append(args, "address", b.MAC)
	}
	if _, err := Run(stepTimeout, "", "ip", args...); err != nil {
		return err
	}
	for _, e := range []End{a, b} {
		for _, p := range e.Addrs {
			args := []string{"-n", e.NS, "addr", "add", p.String(), "dev", e.Dev}
			if p.Addr().Is6() {
				args = append(args, "nodad")
			}
			if _, err := Run(stepTimeout, "", "ip", args...); err != nil {
				return err
			}
		}
		if _, err := Run(stepTimeout, "", "ip", "-n", e.NS, "link", "set", e.Dev, "up"); err != nil {
			return err
		}
	}
	return nil
}

// Listen opens a listener inside namespace ns; it stays there however it
// is used afterwards.
func Listen(ns, network, address string) (net.Listener, error) {
	var ln net.Listener
	err := Do(ns, func() error {
		var err error
		ln, err = net.Listen(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("failed to listen in %s on %s: %w", ns, address, err)
	}
	return ln, nil
}

// Serve accepts connections on ln until ln is closed, and gives each to
// handle on a goroutine of its own; with a nil handle it closes each at
// once, for a test that only looks at the handshake.
func Serve(ln net.Listener, handle func(net.Conn)) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if handle == nil {
				c.Close()
				continue
			}
			go handle(c)
		}
	}()
}
