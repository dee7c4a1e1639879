package netns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDo enters a fresh namespace, where only a loopback interface exists,
// and checks that f's error comes back and that the caller's own namespace
// is untouched afterwards.
func TestDo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("needs ip: %v", err)
	}
	name := fmt.Sprintf("kgn%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })

	before, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var inside []net.Interface
	sentinel := errors.New("from f")
	err = Do(name, func() error {
		var err error
		inside, err = net.Interfaces()
		if err != nil {
			return err
		}
		return sentinel
	})
	if !errors.Is(err, sentinel) {
		t.Fatalf("Do returned %v, want f's error", err)
	}
	if len(inside) != 1 || inside[0].Name != "lo" {
		t.Errorf("interfaces inside the new namespace: %v, want lo alone", inside)
	}
	for range 3 { // threads are reused: none may be left inside
		after, err := net.Interfaces()
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != len(before) {
			t.Fatalf("caller sees %d interfaces after Do, %d before", len(after), len(before))
		}
	}
	if err := Do(name+"-missing", func() error { return nil }); err == nil {
		t.Error("Do entered a namespace that does not exist")
	}
}

// TestRemove starts a process inside a fresh namespace and checks that
// Remove kills it and deletes the namespace, and that removing a
// namespace that is gone is no error.
func TestRemove(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("needs ip: %v", err)
	}
	name := fmt.Sprintf("kgr%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	exited := sleepIn(t, name)

	if err := Remove(name); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the process inside the namespace still runs after Remove")
	}
	if _, err := os.Stat("/run/netns/" + name); err == nil {
		t.Errorf("namespace %s still exists after Remove", name)
	}
	if err := Remove(name); err != nil {
		t.Errorf("Remove of a namespace that is gone: %v", err)
	}
}

// sleepIn starts a process inside namespace name, waits until the
// namespace lists it, and returns a channel closed when it exits.
func sleepIn(t *testing.T, name string) <-chan struct{} {
	t.Helper()
	sleeper := exec.Command("ip", "netns", "exec", name, "sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { sleeper.Wait(); close(exited) }()
	t.Cleanup(func() { sleeper.Process.Kill() })
	// ip netns exec has become sleep once the namespace lists its pid.
	for deadline := time.Now().Add(5 * time.Second); ; {
		out, _ := exec.Command("ip", "netns", "pids", name).Output()
		if strings.Contains(string(out), strconv.Itoa(sleeper.Process.Pid)) {
			return exited
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sleeper never showed in namespace %s", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
