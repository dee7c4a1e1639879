package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// reloadReloads is how many SIGHUPs section 6 sends: issue 12 measured the
// growth at 50 (RSS 15.6 MB at start, 159 MB after), and a router with
// 128 to 256 MB cannot afford it.
const reloadReloads = 50

// reloadQueue is the queue the section's daemon binds; nothing is steered
// to it, so it measures the daemon's own memory, not a load's.
const reloadQueue = 7

// settle is how long the section waits before each reading: past two
// sweeps (daemon.sweepEvery, a second) and the garbage of start-up.
const settle = 2500 * time.Millisecond

// reloadMem is section 6: the real binary with the default caps, a knock
// door and an SPA door (whose replay cache is the largest table), RSS
// after start and after reloadReloads reloads.
type reloadMem struct {
	startKiB, afterKiB int
	reloads            int
}

func (r *reloadMem) ratio() float64 { return float64(r.afterKiB) / float64(r.startKiB) }

// reloadMemory runs knockgate in namespace ns and reloads it. Each reload
// waits for its "policy reloaded" line, so the reloads do not coalesce.
func reloadMemory(ctx context.Context, kg, ns, dir string) (*reloadMem, error) {
	keys, err := exec.CommandContext(ctx, kg, "keygen", "--quiet").Output()
	if err != nil {
		return nil, fmt.Errorf("knockgate keygen: %w", err)
	}
	keysFile := filepath.Join(dir, "reload.keys")
	policy := filepath.Join(dir, "reload.hcl")
	logPath := filepath.Join(dir, "reload.log")
	src := fmt.Sprintf(`gate {
  queue          = %d
  state_file     = %q
  control_socket = %q
}

door "ssh" {
  sequence = ["tcp/7000", "udp/8000", "tcp/9000"]
  open     = ["tcp/22"]
}

door "nas" {
  open = ["tcp/443"]
  spa {
    port      = "udp/62201"
    keys_file = %q
  }
}
`, reloadQueue, filepath.Join(dir, "reload.state"), filepath.Join(dir, "reload.sock"), keysFile)
	if err := os.WriteFile(keysFile, keys, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(policy, []byte(src), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// ip netns exec execs the daemon, so the pid is knockgate's own.
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, kg, "run", "--config", policy, "--log-level", "info")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	pid := cmd.Process.Pid
	if err := waitLines(logPath, "knockgate ready", 1, 10*time.Second); err != nil {
		return nil, err
	}
	// The sweeper walks every table once a second, and a walk makes a
	// table resident where nothing had touched it yet; RSS measured before
	// the first sweep would count tables the daemon allocated as if they
	// were not there, and charge them to the reloads.
	time.Sleep(settle)
	r := &reloadMem{}
	if r.startKiB, err = rssKiB(pid); err != nil {
		return nil, err
	}
	for i := range reloadReloads {
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			return nil, err
		}
		if err := waitLines(logPath, "policy reloaded", i+1, 10*time.Second); err != nil {
			return nil, err
		}
		r.reloads++
	}
	time.Sleep(settle)
	if r.afterKiB, err = rssKiB(pid); err != nil {
		return nil, err
	}
	return r, nil
}

// waitLines waits until the log has n lines containing part.
func waitLines(path, part string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(path)
		if strings.Count(string(b), part) >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %d lines %q in %s within %v: %s", n, part, path, timeout, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rssKiB reads a process's resident set size from /proc.
func rssKiB(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
