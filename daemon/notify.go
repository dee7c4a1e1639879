package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// sdNotify tells systemd about the daemon's state (sd_notify(3)): READY=1
// once the queue is bound, WATCHDOG=1 while the verdict path is healthy.
// Without NOTIFY_SOCKET (not started by systemd) it does nothing.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:] // an abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("failed to reach systemd's notify socket: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("failed to notify systemd: %w", err)
	}
	return nil
}

// watchdogInterval is how often systemd expects WATCHDOG=1, or 0 when the
// unit has no WatchdogSec (or the variables are meant for another process).
func watchdogInterval() time.Duration {
	usec, err := strconv.ParseUint(os.Getenv("WATCHDOG_USEC"), 10, 63)
	if err != nil || usec == 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond
}

// watchdog feeds systemd's watchdog while the verdict path is healthy: the
// queue reader still runs and the engine's lock can be taken (a wedged
// decision would hold it). If either fails, systemd restarts the daemon.
func (d *Daemon) watchdog(ctx context.Context, runDone <-chan struct{}) {
	every := watchdogInterval() / 2
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-runDone:
			return
		case <-t.C:
			alive := make(chan struct{})
			go func() { d.eng.Stats(); close(alive) }()
			select {
			case <-alive:
				sdNotify("WATCHDOG=1")
			case <-time.After(every):
				d.log.Error("verdict path unresponsive; not feeding the watchdog")
			}
		}
	}
}
