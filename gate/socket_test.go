package gate

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSocketOutsidePoller checks that the queue's socket is not in any
// epoll set of the process, Go's poller included, so that a queued packet
// wakes the reader alone. A pipe, which Go does put in its poller, shows
// that the check sees a registered descriptor.
func TestSocketOutsidePoller(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	pipeFD := rawFD(t, r)

	f, err := openSocket(1 << 16)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sockFD := rawFD(t, f)

	watched := epollTargets(t)
	if !watched[pipeFD] {
		t.Fatalf("pipe %d not found in any epoll set (%v): the check cannot see Go's poller", pipeFD, watched)
	}
	if watched[sockFD] {
		t.Errorf("queue socket %d is in an epoll set (%v): the kernel would wake the poller for every packet", sockFD, watched)
	}
	if fl, err := unix.FcntlInt(uintptr(sockFD), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 {
		t.Errorf("queue socket flags %#x, %v: non-blocking, but the loop waits in recvmmsg and needs it blocking", fl, err)
	}
	if typ, err := unix.GetsockoptInt(sockFD, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || typ != unix.NETLINK_NETFILTER {
		t.Errorf("socket protocol %d, %v; want NETLINK_NETFILTER (%d)", typ, err, unix.NETLINK_NETFILTER)
	}
}

// rawFD is f's descriptor, read without Fd, which would change its mode.
func rawFD(t *testing.T, f *os.File) int {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		t.Fatal(err)
	}
	return fd
}

// epollTargets lists the descriptors that the process's epoll instances
// watch, from the "tfd:" lines of their /proc/self/fdinfo.
func epollTargets(t *testing.T) map[int]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]bool{}
	for _, e := range ents {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || link != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(info), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "tfd:" {
				if n, err := strconv.Atoi(f[1]); err == nil {
					out[n] = true
				}
			}
		}
	}
	return out
}
