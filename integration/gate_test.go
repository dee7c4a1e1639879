//go:build integration

package integration

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A knock with Debian's knock client opens the protected port for the
// knocker only, for open_for; a connection opened during the grant outlives
// it; public ports are open to all throughout.
func TestKnockGrantsOnlyTheKnocker(t *testing.T) {
	l := newLab(t)
	l.start()
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			l.t = t
			l.wantTimeout("c1", fam.gwForC1, 22)
			l.wantConnect("c1", fam.gwForC1, 80)

			l.knock("c1", fam, fam.gwForC1, "7000", "8000:udp", "9000")
			l.waitLog("grant opened", 3*time.Second, "door=ssh", "source="+fam.c1.String())
			l.wantConnect("c1", fam.gwForC1, 22)
			held, banner := l.dial("c1", netip.AddrPortFrom(fam.gwForC1, 22))
			if banner != "gw-ssh" {
				t.Fatalf("banner %q, want gw-ssh", banner)
			}
			l.wantTimeout("c2", fam.gwForC2, 22)
			l.wantConnect("c2", fam.gwForC2, 80)

			// open_for is 4s: after it, new connections are refused while
			// the one opened during the grant keeps working.
			l.waitLog("grant expired", 8*time.Second, "door=ssh", "source="+fam.c1.String())
			l.wantTimeout("c1", fam.gwForC1, 22)
			echo(t, held)
		})
	}
}

// Knocks out of order, and a full sequential SYN scan of every port (what
// opens an ascending door in knockd), never open a door; the scanner lands
// in the penalty box. The same door does open for the right sequence, so
// the negative result means something.
func TestWrongOrderAndScansDoNotOpen(t *testing.T) {
	l := newLab(t)
	l.start()
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			l.t = t
			l.knock("c1", fam, fam.gwForC1, "9000", "8000:udp", "7000")
			l.knock("c1", fam, fam.gwForC1, "8000:udp", "7000", "9000")
			l.wantTimeout("c1", fam.gwForC1, 22)

			args := []string{"netns", "exec", l.ns("c1"), "nmap", "-sS", "-r", "-p1-65535", "-n", "-Pn",
				"--max-retries", "1", "--min-rate", "20000", "--max-rtt-timeout", "200ms", "--host-timeout", "120s"}
			if fam == v6 {
				args = append(args, "-6")
			}
			l.must("ip", append(args, fam.gwForC1.String())...)
			if l.hasLog("grant opened", "source="+fam.c1.String()) {
				t.Fatalf("the scan opened a door")
			}
			l.wantTimeout("c1", fam.gwForC1, 443)
			l.wantTimeout("c1", fam.gwForC1, 22)
			// The scan probed knock ports often enough to put c1 in the
			// penalty box (the default policy), so the positive control
			// comes from another source.
			l.waitLog("source penalized", 2*time.Second, "source="+fam.c1.String())
			l.knock("c2", fam, fam.gwForC2, "3000", "4000", "5000")
			l.wantConnect("c2", fam.gwForC2, 443)
		})
	}
}

// The close sequence revokes a grant at once.
func TestCloseSequenceRevokes(t *testing.T) {
	l := newLab(t)
	l.start()
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			l.t = t
			l.knock("c1", fam, fam.gwForC1, "7000", "8000:udp", "9000")
			l.wantConnect("c1", fam.gwForC1, 22)
			l.knock("c1", fam, fam.gwForC1, "9100", "9200")
			l.waitLog("grant revoked", 3*time.Second, "door=ssh", "source="+fam.c1.String())
			l.wantTimeout("c1", fam.gwForC1, 22)
		})
	}
}

// A door can open a gateway port that a static DNAT forwards to a LAN host:
// the gate sees the port the client dialled, before NAT. Knocks here come
// from knockgate's own client, reading the sequence from the policy.
func TestDoorOnDNATPort(t *testing.T) {
	l := newLab(t)
	l.start()
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			l.t = t
			l.wantTimeout("c1", fam.gwForC1, 2222)
			l.must("ip", "netns", "exec", l.ns("c1"), binPath, "knock", "--door", "lan", "--config", l.config(), fam.gwForC1.String())
			c, banner := l.dial("c1", netip.AddrPortFrom(fam.gwForC1, 2222))
			if banner != "lan-ssh" {
				t.Fatalf("banner through DNAT %q, want lan-ssh", banner)
			}
			echo(t, c)
			l.wantTimeout("c2", fam.gwForC2, 2222)
		})
	}
}

// With the daemon killed, nothing gets in: protected ports are closed even
// to a source that held a grant, and so is every other queued port, since
// the steering rules have no --queue-bypass (fail-closed, as documented).
// A new daemon serves again at once.
func TestDaemonKilledFailsClosed(t *testing.T) {
	l := newLab(t)
	l.start()
	for _, fam := range families {
		l.knock("c1", fam, fam.gwForC1, "7000", "8000:udp", "9000")
		l.wantConnect("c1", fam.gwForC1, 22)
	}
	l.kill()
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			l.t = t
			l.wantTimeout("c1", fam.gwForC1, 22)
			l.wantTimeout("c1", fam.gwForC1, 80)
			l.wantTimeout("c2", fam.gwForC2, 22)
		})
	}
	l.t = t
	l.start()
	for _, fam := range families {
		l.wantConnect("c1", fam.gwForC1, 80)
		l.wantTimeout("c2", fam.gwForC2, 22)
	}
}

// TestTwoQueues spreads new connections over two queues with
// --queue-balance, a reader each. The kernel picks the queue from the
// address pair and protocol, so a sequence that mixes TCP and UDP knocks
// arrives on both: it opens the door only because the queues share the
// source's state.
func TestTwoQueues(t *testing.T) {
	l := newLab(t, "--queues", "2")
	l.gateExtra = "queues = 2"
	l.start()
	l.waitLog("knockgate ready", 5*time.Second, "queue=0 queues=2")
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			l.t = t
			l.wantTimeout("c1", fam.gwForC1, 22)
			l.knock("c1", fam, fam.gwForC1, "7000", "8000:udp", "9000")
			l.waitLog("grant opened", 3*time.Second, "door=ssh", "source="+fam.c1.String())
			l.wantConnect("c1", fam.gwForC1, 22)
			l.wantTimeout("c2", fam.gwForC2, 22)
			l.wantConnect("c2", fam.gwForC2, 80)
		})
	}
	l.t = t
	// Both readers serve: connections between many address pairs (each
	// client to each of the gateway's addresses, both families) hash to
	// both queues, but for a chance of 2^-11 that all 12 pick the same one.
	gwAddrs := []netip.Addr{v4.gwForC1, v4.gwForC2, netip.MustParseAddr("192.0.2.1"), v6.gwForC1, v6.gwForC2, netip.MustParseAddr("2001:db8:2::1")}
	for _, c := range []string{"c1", "c2"} {
		for _, a := range gwAddrs {
			l.wantConnect(c, a, 80)
		}
	}
	m := l.scrape("/metrics")
	for _, q := range []string{"0", "1"} {
		if v := metricValue(m, `knockgate_queue_packets_total{queue="`+q+`"}`); v == 0 {
			t.Errorf("queue %s served no packet:\n%s", q, grep(m, "knockgate_queue_packets_total"))
		}
	}
}

// metricValue is the value of the sample named (with labels) series in a
// Prometheus text exposition, or 0 if there is none.
func metricValue(body, series string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}
