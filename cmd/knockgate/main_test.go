package main

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func runMain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = realMain(args, &o, &e)
	return code, o.String(), e.String()
}

func TestUsageAndExitCodes(t *testing.T) {
	const minimal = "../../contrib/examples/minimal.hcl"
	tests := []struct {
		args []string
		code int
		out  string
	}{
		{nil, 2, "Commands:"},
		{[]string{"--help"}, 0, "Commands:"},
		{[]string{"bogus"}, 2, `unknown command "bogus"`},
		{[]string{"version"}, 0, "knockgate dev"},
		{[]string{"run", "--help"}, 0, "Usage: knockgate run --config FILE"},
		{[]string{"knock", "--help"}, 0, "knockgate knock 198.51.100.1 tcp/7000"},
		{[]string{"rules", "--nope"}, 2, "flag provided but not defined"},
		{[]string{"knock"}, 2, "Usage: knockgate knock"},
		{[]string{"knock", "192.0.2.1"}, 1, "no ports to knock on"},
		{[]string{"knock", "192.0.2.1", "tcp/0"}, 1, `port "0" is not a number from 1 to 65535`},
		{[]string{"knock", "--door", "ssh", "192.0.2.1", "tcp/1"}, 1, "either --door or ports"},
		{[]string{"knock", "--door", "nope", "--config", minimal, "192.0.2.1"}, 1, `policy ` + minimal + ` has no door "nope"`},
		{[]string{"sequence", "--door", "nope", "--config", minimal}, 1, `policy ` + minimal + ` has no door "nope"`},
		{[]string{"rules", "--interface", "eth0;reboot"}, 1, "invalid --interface"},
		{[]string{"rules", "--queue", "70000"}, 1, "invalid --queue 70000"},
		{[]string{"rules", "--dnat", "tcp/2222"}, 2, "proto/port=address:port"},
		{[]string{"run", "--config", "/nonexistent/policy.hcl"}, 1, "/nonexistent/policy.hcl"},
		{[]string{"run", "--log-format", "xml"}, 1, `invalid --log-format "xml"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runMain(t, tt.args...)
			if code != tt.code || !strings.Contains(stdout+stderr, tt.out) {
				t.Fatalf("exit %d, output:\n%s%s\nwant exit %d and %q", code, stdout, stderr, tt.code, tt.out)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	examples, err := filepath.Glob("../../contrib/examples/*.hcl")
	if err != nil || len(examples) == 0 {
		t.Fatalf("no example policies: %v", err)
	}
	for _, ex := range examples {
		if code, out, errOut := runMain(t, "validate", "--config", ex); code != 0 || !strings.Contains(out, "valid") {
			t.Errorf("validate %s: exit %d\n%s%s", ex, code, out, errOut)
		}
	}

	bad := filepath.Join(t.TempDir(), "bad.hcl")
	src := "door \"ssh\" {\n  sequence = [\"tcp/7000\", \"tcp/70000\"]\n  open     = [\"tcp/22\"]\n}\n"
	if err := os.WriteFile(bad, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runMain(t, "validate", "--config", bad)
	if code != 1 {
		t.Fatalf("validate of an invalid policy: exit %d, want 1", code)
	}
	// The diagnostic names the file, line and column, and shows the line.
	for _, want := range []string{bad + ":2:27: ", `"tcp/70000"`, "65535"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("diagnostics lack %q:\n%s", want, errOut)
		}
	}
}

func TestRulesOutput(t *testing.T) {
	code, out, errOut := runMain(t, "rules", "--interface", "wan0", "--queue", "3",
		"--dnat", "tcp/2222=192.0.2.10:22", "--dnat", "tcp/2222=[2001:db8:2::10]:22")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	v4, v6, ok := strings.Cut(out, "# ---- ip6tables-restore --noflush ----")
	if !ok {
		t.Fatalf("no IPv6 section:\n%s", out)
	}
	for _, sec := range []string{v4, v6} {
		for _, want := range []string{
			"-A PREROUTING -i wan0 -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW -j KNOCKGATE",
			"-A KNOCKGATE -p tcp -j NFQUEUE --queue-num 3\n",
			"-A KNOCKGATE -p udp -j NFQUEUE --queue-num 3\n",
		} {
			if !strings.Contains(sec, want) {
				t.Errorf("section lacks %q:\n%s", want, sec)
			}
		}
		if strings.Contains(sec, "queue-bypass") || strings.Contains(sec, "KNOCKGATE-PROTECTED") || strings.Contains(sec, "--mark") {
			t.Errorf("default rules must fail closed, without bypass or mark rules:\n%s", sec)
		}
	}
	if !strings.Contains(v4, "--to-destination 192.0.2.10:22") || strings.Contains(v4, "2001:db8") {
		t.Errorf("IPv4 DNAT wrong:\n%s", v4)
	}
	if !strings.Contains(v6, "--to-destination [2001:db8:2::10]:22") || strings.Contains(v6, "192.0.2.10") {
		t.Errorf("IPv6 DNAT wrong:\n%s", v6)
	}
}

// UDP knocks reach a listener on loopback, in order, for both families.
func TestKnockSendsDatagrams(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			var conns []*net.UDPConn
			var args []string
			for i := 0; i < 3; i++ {
				c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(host), 0)))
				if err != nil {
					t.Skipf("no %s: %v", host, err)
				}
				defer c.Close()
				conns = append(conns, c)
				args = append(args, "udp/"+strings.TrimPrefix(c.LocalAddr().(*net.UDPAddr).AddrPort().String()[strings.LastIndex(c.LocalAddr().String(), ":"):], ":"))
			}
			code, out, errOut := runMain(t, append([]string{"knock", "--delay", "1ms", host}, args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s%s", code, out, errOut)
			}
			for i, c := range conns {
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				buf := make([]byte, 16)
				if _, _, err := c.ReadFromUDP(buf); err != nil {
					t.Fatalf("knock %d did not arrive: %v", i, err)
				}
			}
		})
	}
}

func TestProcsFor(t *testing.T) {
	for _, tc := range []struct{ queues, current, want int }{
		{1, 2, 3},   // one reader on two cores: a spare P beside it
		{2, 2, 4},   // two readers: each finds a P free after a long write
		{2, 16, 16}, // never below the runtime's choice
		{4, 1, 6},
	} {
		if got := procsFor(tc.queues, tc.current); got != tc.want {
			t.Errorf("procsFor(%d, %d) = %d, want %d", tc.queues, tc.current, got, tc.want)
		}
	}
}
