package main

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	spa "github.com/knockgate/knockgate/verdict/fwknop"
)

// listenUDP opens a UDP listener on host's loopback and returns it with
// its port.
func listenUDP(t *testing.T, host string) (*net.UDPConn, uint16) {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(host), 0)))
	if err != nil {
		t.Skipf("no %s: %v", host, err)
	}
	t.Cleanup(func() { c.Close() })
	return c, c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
}

// receive reads one datagram and returns it with its source.
func receive(t *testing.T, c *net.UDPConn) ([]byte, netip.Addr) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 2048)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no SPA packet arrived: %v", err)
	}
	return buf[:n], from.Addr().Unmap()
}

func testKeys(t *testing.T, d spa.Digest) (spa.Keys, string, string) {
	t.Helper()
	enc, mac, err := spa.GenerateKeysFor(rand.Reader, d)
	if err != nil {
		t.Fatal(err)
	}
	k := spa.Keys{HMACDigest: d}
	k.Enc, _ = spa.DecodeKey(enc)
	k.HMAC, _ = spa.DecodeKey(mac)
	return k, enc, mac
}

// knockgate spa sends one datagram that the codec accepts with the same
// keys, asking for the given ports for the address the packet comes from,
// over IPv4 and IPv6.
func TestSPASendsDecodablePacket(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			c, port := listenUDP(t, host)
			keys, enc, mac := testKeys(t, spa.SHA256)
			saved := filepath.Join(t.TempDir(), "packet")
			before := time.Now()
			code, out, errOut := runMain(t, "spa", "--key-base64", enc, "--hmac-key-base64", mac,
				"--port", fmt.Sprintf("udp/%d", port), "--access", "tcp/22,udp/53", "--timeout", "45s",
				"--save-packet", saved, host)
			if code != 0 {
				t.Fatalf("exit %d: %s%s", code, out, errOut)
			}
			payload, from := receive(t, c)
			m, err := spa.Decode(payload, keys)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if m.AllowIP != from || from != netip.MustParseAddr(host) {
				t.Errorf("allow IP %v, packet from %v, want both %s", m.AllowIP, from, host)
			}
			want := []spa.Port{{Proto: spa.ProtoTCP, Num: 22}, {Proto: spa.ProtoUDP, Num: 53}}
			if !reflect.DeepEqual(m.Ports, want) {
				t.Errorf("ports %v, want %v", m.Ports, want)
			}
			if m.Type != spa.TypeTimeoutAccess || m.Timeout() != 45*time.Second {
				t.Errorf("type %v timeout %v, want client_timeout_access 45s", m.Type, m.Timeout())
			}
			if err := m.CheckAge(time.Now(), 5*time.Second); err != nil || m.Timestamp.Before(before.Truncate(time.Second)) {
				t.Errorf("timestamp %v: %v", m.Timestamp, err)
			}
			if m.Version != "3.0.0" || m.Username == "" || len(m.Random) != 16 || m.Digest != spa.SHA256 {
				t.Errorf("unexpected fields %+v", m)
			}
			b, err := os.ReadFile(saved)
			if err != nil || string(b) != string(payload) {
				t.Errorf("saved packet %q (%v), want exactly the datagram %q", b, err, payload)
			}
			if !strings.Contains(out, "sent SPA packet to "+host) || !strings.Contains(out, "for 45s") {
				t.Errorf("output %q", out)
			}
		})
	}
}

// Another digest and mode, no timeout, and an explicit allow IP of the
// other family.
func TestSPAOptions(t *testing.T) {
	c, port := listenUDP(t, "127.0.0.1")
	keys, enc, mac := testKeys(t, spa.SHA512)
	keys.Mode = spa.CTR
	code, out, errOut := runMain(t, "spa", "--key-base64", enc, "--hmac-key-base64", mac,
		"--hmac-digest", "sha512", "--mode", "CTR", "--port", fmt.Sprint(port),
		"--access", "tcp/443", "--allow-ip", "2001:db8:1::10", "127.0.0.1")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	payload, _ := receive(t, c)
	m, err := spa.Decode(payload, keys)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if m.AllowIP != netip.MustParseAddr("2001:db8:1::10") || m.Type != spa.TypeAccess || m.ClientTimeout != 0 ||
		!reflect.DeepEqual(m.Ports, []spa.Port{{Proto: spa.ProtoTCP, Num: 443}}) {
		t.Errorf("unexpected message %+v", m)
	}
	// The other digest's keys cannot read it: the digest is not guessed.
	keys.HMACDigest = spa.SHA256
	if _, err := spa.Decode(payload, keys); err == nil {
		t.Error("a sha512 packet decoded with sha256")
	}
}

// With --door and --config, keys, port and digest come from the door's
// spa block and --access defaults to the door's open list.
func TestSPAFromPolicy(t *testing.T) {
	c, port := listenUDP(t, "127.0.0.1")
	keys, enc, mac := testKeys(t, spa.SHA384)
	config := filepath.Join(t.TempDir(), "policy.hcl")
	src := fmt.Sprintf(`door "nas" {
  spa {
    port            = "udp/%d"
    key_base64      = %q
    hmac_key_base64 = %q
    hmac_digest     = "sha384"
  }
  open     = ["tcp/22", "tcp/443"]
  open_for = "30s"
}

door "knock-only" {
  sequence = ["tcp/7000", "tcp/8000"]
  open     = ["tcp/80"]
}
`, port, enc, mac)
	if err := os.WriteFile(config, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := runMain(t, "spa", "--door", "nas", "--config", config, "127.0.0.1")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	payload, _ := receive(t, c)
	m, err := spa.Decode(payload, keys)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := []spa.Port{{Proto: spa.ProtoTCP, Num: 22}, {Proto: spa.ProtoTCP, Num: 443}}
	if !reflect.DeepEqual(m.Ports, want) || m.AllowIP != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("message %+v, want ports %v for 127.0.0.1", m, want)
	}

	code, out, errOut = runMain(t, "spa", "--door", "nas", "--config", config, "--access", "tcp/443", "--timeout", "2s", "127.0.0.1")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	payload, _ = receive(t, c)
	if m, err = spa.Decode(payload, keys); err != nil || len(m.Ports) != 1 || m.Ports[0].Num != 443 || m.ClientTimeout != 2 {
		t.Errorf("message %+v, %v; want tcp/443 for 2s", m, err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--door", "nas", "--access", "tcp/25"}, `door "nas" does not open tcp/25 (it opens tcp/22,tcp/443)`},
		{[]string{"--door", "knock-only"}, `door "knock-only" of policy ` + config + ` has no spa block`},
		{[]string{"--door", "nope"}, `has no door "nope"`},
		{[]string{"--door", "nas", "--key-base64", enc}, "give either --door or --key-base64"},
		{[]string{"--door", "nas", "--hmac-digest", "sha256"}, "give either --door or --hmac-digest"},
	} {
		code, out, errOut := runMain(t, append(append([]string{"spa", "--config", config}, tc.args...), "127.0.0.1")...)
		if code != 1 || !strings.Contains(out+errOut, tc.want) {
			t.Errorf("%v: exit %d, output:\n%s%s\nwant exit 1 and %q", tc.args, code, out, errOut, tc.want)
		}
	}
}

func TestSPAErrors(t *testing.T) {
	_, enc, mac := testKeys(t, spa.SHA256)
	// keyed is a spa command line with valid keys and then args.
	keyed := func(args ...string) []string {
		return append([]string{"spa", "--key-base64", enc, "--hmac-key-base64", mac}, args...)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"spa"}, 2, "Usage: knockgate spa"},
		{[]string{"spa", "--help"}, 0, "knockgate spa --door nas --config"},
		{[]string{"spa", "--access", "tcp/22", "192.0.2.1"}, 1, "no keys: give --door and --config, or --key-base64 and --hmac-key-base64"},
		{[]string{"spa", "--key-base64", enc, "--access", "tcp/22", "192.0.2.1"}, 1, "no keys"},
		{keyed("192.0.2.1"), 1, "no ports to ask for"},
		{keyed("--access", "tcp/22", "--timeout", "1500ms", "192.0.2.1"), 1, "invalid --timeout 1.5s: want whole seconds"},
		{keyed("--access", "tcp/22", "--timeout", "65537s", "192.0.2.1"), 1, "invalid --timeout"},
		{keyed("--access", "tcp/22", "--port", "tcp/62201", "192.0.2.1"), 1, "invalid --port: \"tcp/62201\": SPA packets travel over udp only"},
		{keyed("--access", "tcp/22", "--allow-ip", "example.net", "192.0.2.1"), 1, `invalid --allow-ip "example.net"`},
		{keyed("--access", "tcp/22", "--mode", "legacy", "192.0.2.1"), 1, "invalid --mode legacy"},
		{keyed("--access", "tcp/22", "--mode", "pcbc", "192.0.2.1"), 1, "invalid --mode"},
		{keyed("--access", "tcp/22", "--hmac-digest", "sha2", "192.0.2.1"), 1, "invalid --hmac-digest"},
		{keyed("--access", "icmp/0", "192.0.2.1"), 2, `invalid value "icmp/0" for flag -access`},
		{[]string{"spa", "--key-base64", "not*base64", "--hmac-key-base64", mac, "--access", "tcp/22", "192.0.2.1"}, 1, "invalid --key-base64"},
		{[]string{"spa", "--key-base64", mac, "--hmac-key-base64", mac, "--access", "tcp/22", "192.0.2.1"}, 1, "the encryption key is 64 bytes"},
		{[]string{"spa", "--key-base64", enc, "--hmac-key-base64", enc, "--access", "tcp/22", "192.0.2.1"}, 1, "the encryption and HMAC keys are the same"},
		{keyed("--access", "tcp/22", "192.0.2.1", "extra"), 2, "Usage: knockgate spa"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := runMain(t, tc.args...)
			if code != tc.code || !strings.Contains(out+errOut, tc.want) {
				t.Fatalf("exit %d, output:\n%s%s\nwant exit %d and %q", code, out, errOut, tc.code, tc.want)
			}
		})
	}
}
