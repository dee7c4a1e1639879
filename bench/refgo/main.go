// Command refgo is the bench's Go reference consumer: the least a
// go-nfqueue (v2.1.0) program can do, accept every packet, one
// SetVerdict per packet from the library's callback. It binds the queue
// as knockgate does (copy range 256, queue length 16384 as
// gate.DefaultMaxQueueLen, a receive buffer forced to hold the whole queue
// as gate's readBufferFor sizes it) so the only difference left is what
// each does per packet.
//
// -queues N serves queues -queue .. -queue+N-1, one Nfqueue (one socket,
// one receive goroutine) per queue, for --queue-balance. It runs until
// SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

const (
	copyRange   = 256
	maxQueueLen = 16384
	// As gate's readBufferFor: a queued 256-byte copy costs the socket
	// about 830 bytes of truesize; the kernel doubles what we ask.
	// 16384 × 768 = 12 MiB.
	readBuffer = maxQueueLen * (copyRange + 512)
)

func main() {
	queue := flag.Uint("queue", 0, "first NFQUEUE number")
	queues := flag.Uint("queues", 1, "number of consecutive queues to serve, one socket each")
	flag.Parse()
	if *queues < 1 || *queue+*queues > 65536 {
		fmt.Fprintln(os.Stderr, "refgo: bad -queue/-queues")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var packets, verdictErrs, enobufs atomic.Uint64
	var nfs []*nfqueue.Nfqueue
	for q := *queue; q < *queue+*queues; q++ {
		nf, err := nfqueue.Open(&nfqueue.Config{
			NfQueue:      uint16(q),
			MaxPacketLen: copyRange,
			MaxQueueLen:  maxQueueLen,
			Copymode:     nfqueue.NfQnlCopyPacket,
			AfFamily:     unix.AF_UNSPEC,
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "refgo: open queue %d: %v\n", q, err)
			os.Exit(1)
		}
		if err := forceReadBuffer(nf.Con, readBuffer); err != nil {
			fmt.Fprintf(os.Stderr, "refgo: receive buffer: %v\n", err)
			os.Exit(1)
		}
		hook := func(a nfqueue.Attribute) int {
			if a.PacketID != nil {
				packets.Add(1)
				if err := nf.SetVerdict(*a.PacketID, nfqueue.NfAccept); err != nil {
					verdictErrs.Add(1)
				}
			}
			return 0
		}
		errfn := func(err error) int {
			if ctx.Err() != nil {
				return 1
			}
			if errors.Is(err, unix.ENOBUFS) {
				enobufs.Add(1)
			}
			return 0
		}
		if err := nf.RegisterWithErrorFunc(ctx, hook, errfn); err != nil {
			fmt.Fprintf(os.Stderr, "refgo: bind queue %d: %v\n", q, err)
			os.Exit(1)
		}
		nfs = append(nfs, nf)
	}
	fmt.Printf("refgo: serving queues %d-%d\n", *queue, *queue+*queues-1)
	<-ctx.Done()
	for _, nf := range nfs {
		nf.Close()
	}
	fmt.Printf("refgo: packets=%d verdict_errors=%d enobufs=%d\n", packets.Load(), verdictErrs.Load(), enobufs.Load())
}

func forceReadBuffer(c *netlink.Conn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	if serr != nil {
		return c.SetReadBuffer(n)
	}
	return nil
}
