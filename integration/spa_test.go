//go:build integration

package integration

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	spa "github.com/knockgate/knockgate/verdict/fwknop"
)

// spaKeys is one door's key pair, as KEY_BASE64 and HMAC_KEY_BASE64.
type spaKeys struct{ enc, mac string }

func newSPAKeys(t *testing.T) spaKeys {
	t.Helper()
	enc, mac, err := spa.GenerateKeys(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return spaKeys{enc, mac}
}

// spaLab is a lab whose policy has two SPA doors on one port with their
// own keys: "nas" opens tcp/22 and tcp/443, "web" opens tcp/80. The HMAC
// tells their packets apart.
type spaLab struct {
	*lab
	nas, web spaKeys
}

func newSPALab(t *testing.T) *spaLab {
	t.Helper()
	if _, err := exec.LookPath("fwknop"); err != nil {
		t.Fatalf("the SPA tests drive the stock client: install fwknop-client (see .ci/run): %v", err)
	}
	l := &spaLab{lab: newLab(t), nas: newSPAKeys(t), web: newSPAKeys(t)}
	l.doors = fmt.Sprintf(`
door "nas" {
  spa {
    port            = "udp/62201"
    key_base64      = %q
    hmac_key_base64 = %q
  }
  open     = ["tcp/22", "tcp/443"]
  open_for = "30s"
}

door "web" {
  spa {
    port            = "udp/62201"
    key_base64      = %q
    hmac_key_base64 = %q
  }
  open     = ["tcp/80"]
  open_for = "30s"
}
`, l.nas.enc, l.nas.mac, l.web.enc, l.web.mac)
	return l
}

// fwknop runs Debian's fwknop client in ns, sending to the gateway's
// IPv4 address on that side with keys, as a user would with keys from
// `knockgate keygen`. HOME is a fresh directory so the client writes no
// ~/.fwknop.run or ~/.fwknoprc outside the test.
func (l *spaLab) fwknop(ns string, k spaKeys, args ...string) string {
	l.t.Helper()
	gw := v4.gwForC1
	if ns == "c2" {
		gw = v4.gwForC2
	}
	base := []string{"netns", "exec", l.ns(ns), "env", "HOME=" + l.t.TempDir(),
		"fwknop", "--no-rc-file", "--no-save-args", "-D", gw.String(), "-p", "62201",
		"--use-hmac", "--key-base64-rijndael", k.enc, "--key-base64-hmac", k.mac, "--hmac-digest-type", "sha256"}
	return l.must("ip", append(base, args...)...)
}

// ncSend sends payload as one UDP datagram from ns with nc, as someone
// replaying a captured packet would.
func (l *spaLab) ncSend(ns string, to netip.Addr, payload string) {
	l.t.Helper()
	l.mustIn(payload, "ip", "netns", "exec", l.ns(ns), "nc", "-u", "-n", "-w1", to.String(), "62201")
}

// refused runs send and checks that the daemon refused the packet it
// caused for reason, and that c1 still cannot reach port.
func (l *spaLab) refused(reason string, port int, send func()) {
	l.t.Helper()
	parts := []string{"reason=" + reason, "source=" + v4.c1.String()}
	n := l.countLog(parts...)
	send()
	l.waitLogAfter(n, 3*time.Second, parts...)
	l.wantTimeout("c1", v4.gwForC1, port)
}

// granted runs send and waits for the grant it opens for src.
func (l *spaLab) granted(door string, src netip.Addr, send func()) {
	l.t.Helper()
	parts := []string{"grant opened", "door=" + door, "source=" + src.String()}
	n := l.countLog(parts...)
	send()
	l.waitLogAfter(n, 3*time.Second, parts...)
}

// The stock client opens exactly the ports it asks for, for its own
// address only; the keys pick the door, and one door's keys never open
// another door's ports.
func TestSPAStockClientOpensRequestedPortsOnly(t *testing.T) {
	l := newSPALab(t)
	l.start()
	l.wantTimeout("c1", v4.gwForC1, 22)
	l.wantTimeout("c1", v4.gwForC1, 80)

	l.fwknop("c1", l.nas, "-A", "tcp/22", "-a", v4.c1.String())
	l.waitLog("grant opened", 3*time.Second, "door=nas", "source="+v4.c1.String())
	l.wantConnect("c1", v4.gwForC1, 22)
	l.wantTimeout("c2", v4.gwForC2, 22)  // a second source cannot use c1's grant
	l.wantTimeout("c1", v4.gwForC1, 443) // the door opens 443 too, but it was not asked for

	// nas's keys cannot open web's port: to nas the request is for a port
	// it does not open.
	l.refused("spa_ports", 80, func() { l.fwknop("c1", l.nas, "-A", "tcp/80", "-a", v4.c1.String()) })
	// web's keys on the same UDP port open web's port, and only that.
	l.fwknop("c1", l.web, "-A", "tcp/80", "-a", v4.c1.String())
	l.waitLog("grant opened", 3*time.Second, "door=web", "source="+v4.c1.String())
	l.wantConnect("c1", v4.gwForC1, 80)
	l.refused("spa_ports", 443, func() { l.fwknop("c1", l.web, "-A", "tcp/443", "-a", v4.c1.String()) })

	// Both ports of nas at once, from c2.
	l.fwknop("c2", l.nas, "-A", "tcp/22,tcp/443", "-a", v4.c2.String())
	l.waitLog("grant opened", 3*time.Second, "door=nas", "source="+v4.c2.String())
	l.wantConnect("c2", v4.gwForC2, 22)
	l.wantConnect("c2", v4.gwForC2, 443)
	l.wantTimeout("c2", v4.gwForC2, 80)
}

// Packets with the wrong keys, tampered with, too old, or asking for a
// port outside the door open nothing, and the debug log says why. A good
// packet afterwards opens the door, so the refusals mean something.
func TestSPARefusesBadPackets(t *testing.T) {
	l := newSPALab(t)
	l.start()
	a := []string{"-A", "tcp/22", "-a", v4.c1.String()}
	wrongEnc := spaKeys{enc: newSPAKeys(t).enc, mac: l.nas.mac}
	wrongMAC := spaKeys{enc: l.nas.enc, mac: newSPAKeys(t).mac}

	l.refused("spa_invalid", 22, func() { l.fwknop("c1", wrongEnc, a...) })
	l.refused("spa_invalid", 22, func() { l.fwknop("c1", wrongMAC, a...) })

	// A good packet, built but not sent (-T), with one character changed.
	pkt := filepath.Join(l.dir, "good.pkt")
	l.fwknop("c1", l.nas, append(a, "-T", "-B", pkt)...)
	b, err := os.ReadFile(pkt)
	if err != nil {
		t.Fatal(err)
	}
	good := strings.TrimSpace(string(b)) // -B adds a newline the wire never carries
	// Its neighbour in the base64 alphabet: still valid text, so only the
	// HMAC can tell.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	tampered := []byte(good)
	tampered[50] = alphabet[strings.IndexByte(alphabet, good[50])^1]
	l.refused("spa_invalid", 22, func() { l.ncSend("c1", v4.gwForC1, string(tampered)) })

	l.refused("spa_stale", 22, func() { l.fwknop("c1", l.nas, append(a, "--time-offset-minus", "10min")...) })
	l.refused("spa_ports", 22, func() { l.fwknop("c1", l.nas, "-A", "tcp/25", "-a", v4.c1.String()) })
	// fwknop -s asks for "whatever my source is"; the door does not allow
	// any source.
	l.refused("spa_source", 22, func() { l.fwknop("c1", l.nas, "-A", "tcp/22", "-s") })
	// An allow IP that is not the packet's source.
	l.refused("spa_source", 22, func() { l.fwknop("c1", l.nas, "-A", "tcp/22", "-a", v4.c2.String()) })
	l.wantTimeout("c2", v4.gwForC2, 22)

	// The untampered packet was never sent, so it still works.
	l.ncSend("c1", v4.gwForC1, good)
	l.waitLog("grant opened", 3*time.Second, "door=nas", "source="+v4.c1.String())
	l.wantConnect("c1", v4.gwForC1, 22)
}

// A packet is used once: sent again after its grant ended it is refused,
// also after the daemon restarts (the replay cache is in the state file).
func TestSPAReplayRefused(t *testing.T) {
	l := newSPALab(t)
	l.start()

	// fwknop sends the packet and saves it.
	pkt := filepath.Join(l.dir, "sent.pkt")
	l.fwknop("c1", l.nas, "-A", "tcp/22", "-a", v4.c1.String(), "-B", pkt)
	l.waitLog("grant opened", 3*time.Second, "door=nas", "source="+v4.c1.String())
	l.wantConnect("c1", v4.gwForC1, 22)
	b, err := os.ReadFile(pkt)
	if err != nil {
		t.Fatal(err)
	}
	payload := strings.TrimSpace(string(b))

	revoke := func(src netip.Addr) {
		out := l.must(binPath, "revoke", "--socket", l.socket(), "--door", "nas", "--source", src.String())
		if !strings.Contains(out, "revoked") {
			t.Fatalf("revoke: %s", out)
		}
		l.wantTimeout("c1", v4.gwForC1, 22)
	}
	revoke(v4.c1)
	l.refused("spa_replay", 22, func() { l.ncSend("c1", v4.gwForC1, payload) })

	// Our client's saved packet is the datagram exactly: replayable with
	// nc as it is, and refused the same way.
	ours := filepath.Join(l.dir, "ours.pkt")
	l.granted("nas", v4.c1, func() {
		l.must("ip", "netns", "exec", l.ns("c1"), binPath, "spa", "--door", "nas", "--config", l.config(),
			"--access", "tcp/22", "--save-packet", ours, v4.gwForC1.String())
	})
	l.wantConnect("c1", v4.gwForC1, 22)
	revoke(v4.c1)
	ourPayload, err := os.ReadFile(ours)
	if err != nil {
		t.Fatal(err)
	}
	l.refused("spa_replay", 22, func() { l.ncSend("c1", v4.gwForC1, string(ourPayload)) })

	// kill -9 and start again: both packets are still spent.
	l.kill()
	l.start()
	l.refused("spa_replay", 22, func() { l.ncSend("c1", v4.gwForC1, payload) })
	l.refused("spa_replay", 22, func() { l.ncSend("c1", v4.gwForC1, string(ourPayload)) })
	// A fresh packet still works after the restart.
	l.fwknop("c1", l.nas, "-A", "tcp/22", "-a", v4.c1.String())
	l.waitLog("grant opened", 3*time.Second, "door=nas", "source="+v4.c1.String())
	l.wantConnect("c1", v4.gwForC1, 22)
}

// knockgate's own client asks for access for an IPv6 source, which the
// stock client cannot: the grant is for c1's IPv6 address alone.
func TestSPAOwnClientIPv6(t *testing.T) {
	l := newSPALab(t)
	l.start()
	l.wantTimeout("c1", v6.gwForC1, 22)
	out := l.must("ip", "netns", "exec", l.ns("c1"), binPath, "spa", "--door", "nas", "--config", l.config(), v6.gwForC1.String())
	if !strings.Contains(out, "for "+v6.c1.String()) {
		t.Fatalf("knockgate spa: %s", out)
	}
	l.waitLog("grant opened", 3*time.Second, "door=nas", "source="+v6.c1.String())
	// --access defaults to the door's open list.
	l.wantConnect("c1", v6.gwForC1, 22)
	l.wantConnect("c1", v6.gwForC1, 443)
	l.wantTimeout("c1", v6.gwForC1, 80)
	l.wantTimeout("c2", v6.gwForC2, 22)
	l.wantTimeout("c1", v4.gwForC1, 22) // c1's IPv4 address holds no grant
}

// A client-timeout message gets a grant of the length it asks for (at
// most open_for): fwknop -f 2, and knockgate spa --timeout 2s over IPv6.
func TestSPAClientTimeout(t *testing.T) {
	l := newSPALab(t)
	l.start()
	for _, tc := range []struct {
		name string
		src  netip.Addr
		gw   netip.Addr
		send func()
	}{
		{"fwknop -f 2", v4.c1, v4.gwForC1, func() { l.fwknop("c1", l.nas, "-A", "tcp/22", "-a", v4.c1.String(), "-f", "2") }},
		{"knockgate spa --timeout 2s", v6.c1, v6.gwForC1, func() {
			l.must("ip", "netns", "exec", l.ns("c1"), binPath, "spa", "--door", "nas", "--config", l.config(),
				"--access", "tcp/22", "--timeout", "2s", v6.gwForC1.String())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l.t = t
			start := time.Now()
			tc.send()
			l.waitLog("grant opened", 3*time.Second, "door=nas", "source="+tc.src.String())
			l.wantConnect("c1", tc.gw, 22)
			l.waitLog("grant expired", 6*time.Second, "door=nas", "source="+tc.src.String())
			// Expiry is logged by a sweep that runs every second.
			if held := time.Since(start); held < 2*time.Second || held > 4500*time.Millisecond {
				t.Fatalf("the grant ended %v after the packet, want about 2s, not open_for's 30s", held)
			}
			l.wantTimeout("c1", tc.gw, 22)
		})
	}
}

// The whole setup a user follows: `knockgate keygen` output saved as the
// door's keys_file, and its .fwknoprc stanza driving the stock client
// with fwknop -n.
func TestSPAKeygenSetup(t *testing.T) {
	if _, err := exec.LookPath("fwknop"); err != nil {
		t.Fatalf("install fwknop-client (see .ci/run): %v", err)
	}
	l := newLab(t)
	out := l.must(binPath, "keygen", "--server", v4.gwForC1.String(), "--access", "tcp/22")
	keys := filepath.Join(l.dir, "nas.keys")
	if err := os.WriteFile(keys, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	l.doors = fmt.Sprintf(`
door "nas" {
  spa {
    keys_file = %q
  }
  open = ["tcp/22"]
}
`, keys)
	l.start()

	// The stanza is the comment block from "[knockgate]" on; the user puts
	// in their address for ALLOW_IP resolve, which needs the internet.
	var rc strings.Builder
	in := false
	for line := range strings.SplitSeq(out, "\n") {
		s, ok := strings.CutPrefix(line, "#   ")
		in = in && ok || ok && s == "[knockgate]"
		if in {
			if strings.HasPrefix(s, "ALLOW_IP") {
				s = "ALLOW_IP " + v4.c1.String()
			}
			rc.WriteString(s + "\n")
		}
	}
	if !strings.Contains(rc.String(), "HMAC_KEY_BASE64") {
		t.Fatalf("no .fwknoprc stanza in keygen's output:\n%s", out)
	}
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, ".fwknoprc"), []byte(rc.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	l.wantTimeout("c1", v4.gwForC1, 22)
	l.must("ip", "netns", "exec", l.ns("c1"), "env", "HOME="+home, "fwknop", "-n", "knockgate", "--no-save-args")
	l.waitLog("grant opened", 3*time.Second, "door=nas", "source="+v4.c1.String())
	l.wantConnect("c1", v4.gwForC1, 22)
}
