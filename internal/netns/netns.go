// Package netns builds the network-namespace labs of the kernel tests and
// the benchmarks: namespaces made and removed together (Lab), with
// whatever still runs in them (Remove), veth pairs between them (Veth),
// lab commands run with a bounded time (Run), and code, listeners and
// sockets inside a namespace (Do, Listen). Every lab is its own set of
// namespaces; the daemon itself never changes namespace.
package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Do runs f on an OS thread switched into namespace name, and returns f's
// error. Sockets f opens stay in that namespace for their lifetime. The
// thread is switched back afterwards and returned to Go's pool; if that
// fails, it stays locked, and Go retires it when the goroutine ends rather
// than reuse a thread in the wrong namespace. Retiring a thread is not
// free of side effects: child processes started with Pdeathsig from it
// would be killed, which is why Do switches back whenever it can.
func Do(name string, f func() error) error {
	target, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("failed to open network namespace %s: %w", name, err)
	}
	defer unix.Close(target)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("failed to open this thread's network namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("failed to enter network namespace %s: %w", name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("failed to leave network namespace %s: %w", name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Remove kills every process left in namespace name (never the caller)
// and deletes it: a process inside would keep the namespace, and its
// interfaces and addresses, alive after `ip netns del`. A namespace that
// does not exist is no error.
func Remove(name string) error {
	if _, err := os.Stat("/run/netns/" + name); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				unix.Kill(pid, unix.SIGKILL)
			}
		}
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("failed to delete network namespace %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
