//go:build integration

package integration

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The fail-closed mode, the default, is covered by
// TestDaemonKilledFailsClosed: with the daemon killed, protected and
// unprotected ports alike time out.

// In fail-open mode (gate { fail_open = true } and the rules `knockgate
// rules --config` prints for it), the gate works as usual while the daemon
// runs. Killed, it leaves the public services reachable and the doors shut,
// even for a source that held a grant; knock ports then answer as closed
// ports do (a TCP reset, an ICMP port unreachable), since nothing listens
// on them, instead of timing out. A new daemon serves again, with the grants
// it saved.
func TestFailOpenDaemonKilledKeepsDoorsShut(t *testing.T) {
	l := newLab(t)
	l.loadFailOpen()
	l.start()

	for _, fam := range families {
		t.Run(fam.name+"/running", func(t *testing.T) {
			l.t = t
			l.wantConnect("c1", fam.gwForC1, 80)
			l.wantTimeout("c1", fam.gwForC1, 22)
			l.wantTimeout("c1", fam.gwForC1, 2222)
			l.wantTimeout("c2", fam.gwForC2, 7000) // a knock port: dropped by the gate

			l.knock("c1", fam, fam.gwForC1, "7000", "8000:udp", "9000")
			l.wantConnect("c1", fam.gwForC1, 22)
			l.wantTimeout("c2", fam.gwForC2, 22)

			l.knock("c1", fam, fam.gwForC1, "6100:udp", "6200")
			if _, banner := l.dial("c1", netip.AddrPortFrom(fam.gwForC1, 2222)); banner != "lan-ssh" {
				t.Fatalf("banner through DNAT %q, want lan-ssh", banner)
			}
			l.wantTimeout("c2", fam.gwForC2, 2222)
		})
	}
	l.t = t
	// The connections the gate accepted went past the drop rules, so they
	// carried the accept mark; the drop rules themselves dropped nothing,
	// the gate did.
	for _, ipt := range []string{"iptables", "ip6tables"} {
		if n := l.protectedDrops(ipt); n != 0 {
			t.Fatalf("%s: the fail-open drop rules dropped %d packets while the daemon ran, want 0", ipt, n)
		}
	}

	// A fresh grant on tcp/22 just before the crash; the tcp/2222 grants
	// (60s) are live too.
	for _, fam := range families {
		l.knock("c1", fam, fam.gwForC1, "7000", "8000:udp", "9000")
	}
	l.kill()
	for _, fam := range families {
		t.Run(fam.name+"/killed", func(t *testing.T) {
			l.t = t
			l.wantConnect("c1", fam.gwForC1, 80)
			l.wantConnect("c2", fam.gwForC2, 80)
			l.wantTimeout("c1", fam.gwForC1, 22)
			l.wantTimeout("c1", fam.gwForC1, 2222)
			l.wantTimeout("c2", fam.gwForC2, 22)
			l.wantTimeout("c2", fam.gwForC2, 443)
			l.wantTimeout("c2", fam.gwForC2, 2222)
			l.wantRefused("c2", fam.gwForC2, 7000)
			l.wantUDPRefused("c2", netip.AddrPortFrom(fam.gwForC2, 8000))
		})
	}
	l.t = t
	for _, ipt := range []string{"iptables", "ip6tables"} {
		if n := l.protectedDrops(ipt); n == 0 {
			t.Fatalf("%s: the fail-open drop rules dropped nothing with the daemon killed", ipt)
		}
	}

	l.start()
	for _, fam := range families {
		l.wantTimeout("c2", fam.gwForC2, 22)
		l.wantConnect("c2", fam.gwForC2, 80)
		// The lan grant was saved and restored.
		if _, banner := l.dial("c1", netip.AddrPortFrom(fam.gwForC1, 2222)); banner != "lan-ssh" {
			t.Fatalf("banner through DNAT after restart %q, want lan-ssh", banner)
		}
	}
}

// loadFailOpen writes the lab's policy with fail_open = true and replaces
// the gateway's steering rules with those `knockgate rules --config` prints
// for it, with the lab's DNAT.
func (l *lab) loadFailOpen() {
	l.t.Helper()
	l.gateExtra = "  fail_open = true"
	l.writePolicy(l.doors)
	gw := l.ns("gw")
	for _, ipt := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"mangle", "filter", "nat"} {
			l.must("ip", "netns", "exec", gw, ipt, "-t", table, "-F")
			l.must("ip", "netns", "exec", gw, ipt, "-t", table, "-X")
		}
	}
	out := l.must(binPath, "rules", "--config", l.config(), "--dnat", "tcp/2222=192.0.2.10:2222", "--dnat", "tcp/2222=[2001:db8:2::10]:2222")
	v4rules, v6rules, ok := strings.Cut(out, "# ---- ip6tables-restore --noflush ----")
	if !ok {
		l.t.Fatalf("knockgate rules printed no ip6tables section:\n%s", out)
	}
	for _, want := range []string{"--queue-bypass", "--ctorigdstport 22 -j DROP", "--ctorigdstport 443 -j DROP", "--ctorigdstport 2222 -j DROP"} {
		if !strings.Contains(v4rules, want) || !strings.Contains(v6rules, want) {
			l.t.Fatalf("fail-open rules lack %q:\n%s", want, out)
		}
	}
	l.mustIn(v4rules, "ip", "netns", "exec", gw, "iptables-restore", "--noflush")
	l.mustIn(v6rules, "ip", "netns", "exec", gw, "ip6tables-restore", "--noflush")
}

func (l *lab) protectedDrops(ipt string) uint64 {
	l.t.Helper()
	out := l.must("ip", "netns", "exec", l.ns("gw"), ipt, "-t", "mangle", "-L", "KNOCKGATE-PROTECTED", "-v", "-x", "-n")
	var sum uint64
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, "DROP") {
			continue
		}
		var n uint64
		if _, err := fmt.Sscan(line, &n); err != nil {
			l.t.Fatalf("no counter in %q: %v", line, err)
		}
		sum += n
	}
	return sum
}

// wantRefused checks that a TCP connection from ns to to:port is refused at
// once, as by a closed port, rather than timing out.
func (l *lab) wantRefused(ns string, to netip.Addr, port int) {
	l.t.Helper()
	start := time.Now()
	out, err := l.run("", "ip", "netns", "exec", l.ns(ns), "nc", "-z", "-v", "-n", "-w", "3", to.String(), fmt.Sprint(port))
	if err == nil || !strings.Contains(out, "refused") {
		l.t.Fatalf("%s: connect to %s port %d: %v %q after %v, want it refused", ns, to, port, err, out, time.Since(start))
	}
}

// wantUDPRefused checks that a datagram from ns to to draws an ICMP port
// unreachable, as a closed UDP port does.
func (l *lab) wantUDPRefused(ns string, to netip.AddrPort) {
	l.t.Helper()
	err := l.inNS(ns, func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write([]byte("knock")); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = c.Read(make([]byte, 16))
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil
		}
		return fmt.Errorf("read after sending: %v, want connection refused (port unreachable)", err)
	})
	if err != nil {
		l.t.Fatalf("%s: udp to %s: %v", ns, to, err)
	}
}
