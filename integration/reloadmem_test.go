//go:build integration

package integration

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A router with 128 to 256 MB cannot afford a daemon that grows with every
// reload: each SIGHUP once allocated every table anew, and the runtime kept
// the garbage (RSS 15.6 MB at start, 159 MB after 50 reloads). The real
// binary, default caps, 50 reloads: RSS stays within 1.5 times what it was
// after start. `make bench` reports the same figures (section 6).
func TestReloadsDoNotGrowRSS(t *testing.T) {
	l := newLab(t)
	l.logLevel = "info"
	l.start()
	pid := l.daemon.Process.Pid
	// Past two sweeps: a sweep walks every table, which makes it resident
	// where nothing had touched it yet, so RSS read before it would
	// charge the daemon's own tables to the reloads.
	time.Sleep(2500 * time.Millisecond)
	before := vmRSS(t, pid)
	const reloads = 50
	for i := range reloads {
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		l.waitLogAfter(i, 10*time.Second, "policy reloaded")
	}
	time.Sleep(2500 * time.Millisecond)
	after := vmRSS(t, pid)
	t.Logf("RSS after start %d KiB, after %d reloads %d KiB (%.2f×)", before, reloads, after, float64(after)/float64(before))
	if after*2 > 3*before {
		t.Errorf("RSS grew from %d KiB to %d KiB over %d reloads; want at most 1.5 times", before, after, reloads)
	}
}

// vmRSS reads a process's resident set size in KiB from /proc.
func vmRSS(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("VmRSS of %d: %v", pid, err)
			}
			return n
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
