//go:build integration

package integration

import (
	"net/netip"
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
