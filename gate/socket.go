package gate

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openSocket opens a NETLINK_NETFILTER socket in the network namespace
// of the calling thread, bound to a port the kernel picks, and sized to
// hold readBuffer bytes of queued messages.
//
// The socket is blocking and kept out of Go's network poller on purpose.
// A socket in the poller's epoll set wakes the poller's thread for every
// packet the kernel queues, although the loop reads the socket itself:
// traced with sched events on Linux 6.18, every packet woke a second
// thread of the daemon beside the reader. os.NewFile registers only
// non-blocking descriptors, so the blocking one here stays out.
func openSocket(readBuffer int) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("failed to open netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("failed to bind netlink socket: %w", err)
	}
	// NETLINK_NO_ENOBUFS stays off: the kernel's ENOBUFS is how we learn
	// that it dropped messages for us, and Stats counts it.
	if err := setReadBuffer(fd, readBuffer); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("failed to size receive buffer to %d bytes: %w", readBuffer, err)
	}
	return os.NewFile(uintptr(fd), "nfqueue"), nil
}

// setReadBuffer sets the receive buffer with SO_RCVBUFFORCE, which
// CAP_NET_ADMIN (needed for the queue anyway) lets exceed
// net.core.rmem_max. Should that fail, it falls back to SO_RCVBUF, which
// the kernel silently caps at rmem_max.
func setReadBuffer(fd, n int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n); err == nil {
		return nil
	}
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, n)
}
