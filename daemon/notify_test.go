package daemon

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// fakeSystemd listens where NOTIFY_SOCKET points, as systemd does for a
// Type=notify unit; read returns the next notification.
func fakeSystemd(t *testing.T) (read func() string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return func() string {
		t.Helper()
		ln.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 256)
		n, err := ln.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
}

func TestSdNotify(t *testing.T) {
	read := fakeSystemd(t)
	if err := sdNotify("READY=1"); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "READY=1" {
		t.Fatalf("got %q", got)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := sdNotify("READY=1"); err != nil {
		t.Fatalf("without systemd: %v", err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if got := watchdogInterval(); got != 30*time.Second {
		t.Fatalf("got %v", got)
	}
	t.Setenv("WATCHDOG_PID", "1")
	if got := watchdogInterval(); got != 0 {
		t.Fatalf("for another pid: %v", got)
	}
	t.Setenv("WATCHDOG_USEC", "")
	if got := watchdogInterval(); got != 0 {
		t.Fatalf("unset: %v", got)
	}
}

// A daemon started by systemd says READY=1 once its queues are bound,
// feeds the watchdog while the verdict path answers, and says STOPPING=1
// when it stops.
func TestRunNotifiesSystemd(t *testing.T) {
	read := fakeSystemd(t)
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	l := startLab(t, "", twoDoors)
	if got := read(); got != "READY=1\nSTATUS=deciding packets on queue 0" {
		t.Fatalf("first notification %q, want READY=1 and the queue", got)
	}
	if got := read(); got != "WATCHDOG=1" {
		t.Fatalf("then %q, want WATCHDOG=1", got)
	}
	l.stop()
	for {
		if got := read(); got == "STOPPING=1" {
			break
		} else if got != "WATCHDOG=1" {
			t.Fatalf("at stop %q, want STOPPING=1", got)
		}
	}
}
