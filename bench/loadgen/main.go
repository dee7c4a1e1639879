// Command loadgen is knockgate's bounded SYN load generator for `make bench`.
//
// It writes TCP SYNs with spoofed source addresses through a raw socket
// (IPv4 with IP_HDRINCL, IPv6 with IPPROTO_RAW, which writes the IPv6
// header too), many per system call with sendmmsg. Sources are drawn from
// a prefix (by default 198.51.100.0/24 or 2001:db8:ff00::/40, documentation
// ranges) and source ports walk 1024-65535, so every packet is a new
// conntrack entry at the gateway. It is meant to run inside the bench's
// client network namespace, towards the gateway's address in the lab.
//
// It always stops by itself: after -count packets or -duration, whichever
// comes first. -rate 0 sends as fast as the kernel takes packets.
// It prints one JSON object with what it sent.
package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/knockgate/knockgate/internal/synpkt"
)

type result struct {
	Sent     int     `json:"sent"`
	Seconds  float64 `json:"seconds"`
	Rate     float64 `json:"rate"`
	Target   int     `json:"target_rate"`
	Sources  int     `json:"sources"`
	Dst      string  `json:"dst"`
	Port     int     `json:"port"`
	ENOBUFS  int     `json:"enobufs"`
	Stopped  string  `json:"stopped"`
	BatchMax int     `json:"batch"`
}

func main() {
	var (
		count    = flag.Int("count", 100000, "packets to send at most")
		duration = flag.Duration("duration", 5*time.Second, "time to send for at most")
		rate     = flag.Int("rate", 0, "packets per second; 0 sends as fast as possible")
		dstFlag  = flag.String("dst", "", "destination address (the gateway in the lab); IPv4 or IPv6")
		port     = flag.Int("port", 8080, "destination TCP port")
		srcFlag  = flag.String("src", "", "source prefix (default 198.51.100.0/24, or 2001:db8:ff00::/40 for an IPv6 -dst)")
		sources  = flag.Int("sources", 0, "distinct source addresses, cycled; 0 uses every address of -src (IPv4) or 65536 (IPv6)")
		batch    = flag.Int("batch", 64, "packets per sendmmsg call at most")
	)
	flag.Parse()
	if err := run(*count, *duration, *rate, *dstFlag, *port, *srcFlag, *sources, *batch); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(count int, duration time.Duration, rate int, dstFlag string, port int, srcFlag string, sources, batch int) error {
	if count <= 0 || duration <= 0 || duration > 10*time.Minute {
		return errors.New("-count must be positive and -duration between 0 and 10m")
	}
	if port < 1 || port > 65535 || batch < 1 || batch > 1024 || rate < 0 {
		return errors.New("-port 1-65535, -batch 1-1024, -rate >= 0")
	}
	dst, err := netip.ParseAddr(dstFlag)
	if err != nil {
		return fmt.Errorf("-dst: %w", err)
	}
	v6 := dst.Is6() && !dst.Is4In6()
	dst = dst.Unmap()
	if srcFlag == "" {
		srcFlag = "198.51.100.0/24"
		if v6 {
			srcFlag = "2001:db8:ff00::/40"
		}
	}
	pfx, err := netip.ParsePrefix(srcFlag)
	if err != nil {
		return fmt.Errorf("-src: %w", err)
	}
	pfx = pfx.Masked()
	if pfx.Addr().Is6() != v6 {
		return errors.New("-src and -dst are of different families")
	}
	hostBits := pfx.Addr().BitLen() - pfx.Bits()
	space := uint64(1) << min(hostBits, 62)
	if sources <= 0 {
		sources = int(min(space, 65536))
		if !v6 {
			sources = int(min(space, 1<<24))
		}
	}
	if uint64(sources) > space {
		return fmt.Errorf("-sources %d does not fit in %s", sources, pfx)
	}

	runtime.LockOSThread()
	family, hlen := unix.AF_INET, synpkt.Len4
	if v6 {
		family, hlen = unix.AF_INET6, synpkt.Len6
	}
	// IPPROTO_RAW implies IP_HDRINCL (IPv4) and, since Linux 4.5, that the
	// IPv6 header is ours to write too.
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)

	// The destination sockaddr in kernel layout, shared by every message.
	var sa4 unix.RawSockaddrInet4
	var sa6 unix.RawSockaddrInet6
	var saPtr unsafe.Pointer
	var saLen uint32
	if v6 {
		sa6.Family = unix.AF_INET6
		sa6.Addr = dst.As16()
		saPtr, saLen = unsafe.Pointer(&sa6), uint32(unsafe.Sizeof(sa6))
	} else {
		sa4.Family = unix.AF_INET
		sa4.Addr = dst.As4()
		saPtr, saLen = unsafe.Pointer(&sa4), uint32(unsafe.Sizeof(sa4))
	}

	type mmsghdr struct {
		hdr unix.Msghdr
		n   uint32
		_   [4]byte
	}
	bufs := make([]byte, batch*hlen)
	iovs := make([]unix.Iovec, batch)
	msgs := make([]mmsghdr, batch)
	for i := range msgs {
		iovs[i].Base = &bufs[i*hlen]
		iovs[i].SetLen(hlen)
		msgs[i].hdr.Name = (*byte)(saPtr)
		msgs[i].hdr.Namelen = saLen
		msgs[i].hdr.Iov = &iovs[i]
		msgs[i].hdr.SetIovlen(1)
	}

	base := pfx.Addr()
	// A random start, so consecutive runs do not replay the same tuples.
	seq := rand.Uint64N(uint64(sources) * 64512)
	var d4 [4]byte
	if !v6 {
		d4 = dst.As4()
	}
	d16 := dst.As16()
	fill := func(b []byte, n uint64) {
		idx := n % uint64(sources)
		sport := uint16(1024 + (n/uint64(sources))%64512)
		if v6 {
			a := base.As16()
			hi, lo := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
			lo2 := lo + idx
			if lo2 < lo {
				hi++
			}
			binary.BigEndian.PutUint64(a[:8], hi)
			binary.BigEndian.PutUint64(a[8:], lo2)
			synpkt.IPv6(b, a, d16, sport, uint16(port))
		} else {
			a := base.As4()
			binary.BigEndian.PutUint32(a[:], binary.BigEndian.Uint32(a[:])+uint32(idx))
			synpkt.IPv4(b, a, d4, sport, uint16(port))
		}
	}

	res := result{Target: rate, Sources: sources, Dst: dst.String(), Port: port, BatchMax: batch, Stopped: "count"}
	chunk := batch
	if rate > 0 {
		// Small bursts keep pacing smooth: about 5,000 calls a second.
		chunk = max(1, min(batch, rate/5000))
	}
	start := time.Now()
	deadline := start.Add(duration)
	for res.Sent < count {
		now := time.Now()
		if now.After(deadline) {
			res.Stopped = "duration"
			break
		}
		if rate > 0 {
			due := start.Add(time.Duration(float64(res.Sent) / float64(rate) * float64(time.Second)))
			if wait := due.Sub(now); wait > 0 {
				if wait > 300*time.Microsecond {
					time.Sleep(wait - 100*time.Microsecond)
				}
				for time.Now().Before(due) {
				}
			}
		}
		n := min(chunk, count-res.Sent)
		for i := 0; i < n; i++ {
			fill(bufs[i*hlen:(i+1)*hlen], seq)
			seq++
		}
		sent, errno := sendmmsg(fd, unsafe.Pointer(&msgs[0]), n)
		if errno != 0 {
			if errno == unix.ENOBUFS || errno == unix.EAGAIN || errno == unix.EINTR {
				res.ENOBUFS++
				seq -= uint64(n)
				continue
			}
			return fmt.Errorf("sendmmsg: %w", errno)
		}
		res.Sent += sent
		seq -= uint64(n - sent)
	}
	res.Seconds = time.Since(start).Seconds()
	if res.Seconds > 0 {
		res.Rate = float64(res.Sent) / res.Seconds
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

func sendmmsg(fd int, msgs unsafe.Pointer, n int) (int, unix.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(msgs), uintptr(n), 0, 0, 0)
	return int(r), e
}
