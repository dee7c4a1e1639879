package netns

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	out, err := Run(5*time.Second, "from stdin\n", "cat")
	if err != nil || out != "from stdin\n" {
		t.Errorf("cat: %q, %v; want its stdin back", out, err)
	}
	out, err = Run(5*time.Second, "", "sh", "-c", "echo oops; exit 3")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 || out != "oops\n" ||
		!strings.Contains(err.Error(), "sh -c echo oops; exit 3") || !strings.HasSuffix(err.Error(), ": oops") {
		t.Errorf("failing command: %q, %v; want its output, and an error naming it with exit status 3 and its output", out, err)
	}
	start := time.Now()
	if _, err := Run(100*time.Millisecond, "", "sleep", "10"); err == nil {
		t.Error("sleep 10 with a 100ms timeout: no error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the timeout killed sleep after %v", d)
	}
}

// TestLab builds two namespaces joined by a veth pair, serves TCP in one
// and dials it from the other over both families, then checks that Close
// removes both namespaces and what ran in them.
func TestLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("needs ip: %v", err)
	}
	var l Lab
	t.Cleanup(func() { l.Close() })
	a, b := fmt.Sprintf("kgl%d-a", os.Getpid()), fmt.Sprintf("kgl%d-b", os.Getpid())
	for _, ns := range []string{a, b} {
		if err := l.Add(ns); err != nil {
			t.Fatal(err)
		}
	}
	srv4, srv6 := netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("2001:db8:1::1/64")
	err := Veth(
		End{NS: a, Dev: "s0", MAC: "02:6b:67:00:00:01", Addrs: []netip.Prefix{srv4, srv6}},
		End{NS: b, Dev: "c0", Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24"), netip.MustParsePrefix("2001:db8:1::2/64")}},
	)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := Run(time.Minute, "", "ip", "-n", a, "link", "show", "s0"); err != nil || !strings.Contains(out, "02:6b:67:00:00:01") {
		t.Errorf("s0 in %s: %v\n%s; want MAC 02:6b:67:00:00:01", a, err, out)
	}
	if out, err := Run(time.Minute, "", "ip", "link", "show"); err != nil || strings.Contains(out, "s0") || strings.Contains(out, "c0@") {
		t.Errorf("an end of the pair showed up in the caller's namespace: %v\n%s", err, out)
	}

	ln, err := Listen(a, "tcp", "[::]:7070")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	Serve(ln, func(c net.Conn) {
		defer c.Close()
		fmt.Fprintln(c, "hello")
	})
	for _, to := range []netip.Addr{srv4.Addr(), srv6.Addr()} {
		var c net.Conn
		err := Do(b, func() error {
			var err error
			c, err = net.DialTimeout("tcp", netip.AddrPortFrom(to, 7070).String(), 3*time.Second)
			return err
		})
		if err != nil {
			t.Fatalf("dial %s from %s: %v", to, b, err)
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if line != "hello\n" {
			t.Errorf("from %s: %q, %v; want the greeting", to, line, err)
		}
	}

	exited := sleepIn(t, b)
	ln.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Error("the process in the lab still runs after Close")
	}
	for _, ns := range []string{a, b} {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			t.Errorf("namespace %s still exists after Close", ns)
		}
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
