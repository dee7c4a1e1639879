package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// The orchestrator runs itself inside the lab's namespaces for two small
// jobs (ip netns exec BIN probe-...): a listener in the gateway and the
// connect-latency probe in the client.

// probeListen accepts and closes connections until killed.
func probeListen(args []string) error {
	fs := flag.NewFlagSet("probe-listen", flag.ExitOnError)
	port := fs.Int("port", listenPort, "TCP port")
	fs.Parse(args)
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(*port))
	if err != nil {
		return err
	}
	fmt.Println("listening")
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			time.Sleep(time.Millisecond)
			continue
		}
		c.Close()
	}
}

// latencyResult is what probe-connect prints: microseconds.
type latencyResult struct {
	N      int     `json:"n"`
	Failed int     `json:"failed"`
	P50    float64 `json:"p50_us"`
	P90    float64 `json:"p90_us"`
	P99    float64 `json:"p99_us"`
	Max    float64 `json:"max_us"`
	Mean   float64 `json:"mean_us"`
}

// probeConnect times n sequential blocking connects (SYN sent to SYN-ACK
// received), each from a new ephemeral port, so each is a new flow and a
// new conntrack entry at the gateway. Each socket is closed with a RST
// (SO_LINGER 0) so nothing lingers. Bounded by n and by -max.
func probeConnect(args []string) error {
	fs := flag.NewFlagSet("probe-connect", flag.ExitOnError)
	dst := fs.String("dst", gwAddr4+":"+strconv.Itoa(listenPort), "address:port")
	n := fs.Int("n", 2000, "connects")
	timeout := fs.Duration("timeout", time.Second, "per connect")
	maxT := fs.Duration("max", 30*time.Second, "stop after this long")
	fs.Parse(args)
	ap, err := netip.ParseAddrPort(*dst)
	if err != nil || !ap.Addr().Is4() {
		return fmt.Errorf("-dst must be an IPv4 address:port")
	}
	runtime.LockOSThread()
	sa := &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	lat := make([]float64, 0, *n)
	res := latencyResult{}
	start := time.Now()
	for i := 0; i < *n && time.Since(start) < *maxT; i++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		// A blocking connect gives up after SO_SNDTIMEO.
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		t0 := time.Now()
		err = unix.Connect(fd, sa)
		d := time.Since(t0)
		unix.Close(fd)
		if err != nil {
			res.Failed++
			continue
		}
		lat = append(lat, float64(d.Nanoseconds())/1e3)
	}
	res.N = len(lat)
	if len(lat) > 0 {
		slices.Sort(lat)
		res.P50, res.P90, res.P99, res.Max = pct(lat, 50), pct(lat, 90), pct(lat, 99), lat[len(lat)-1]
		var s float64
		for _, v := range lat {
			s += v
		}
		res.Mean = s / float64(len(lat))
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// pct is the p-th percentile of sorted values by nearest rank: the
// ceil(p/100 × n)-th value, as bench/knockopen reports its own.
func pct(sorted []float64, p int) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100
	return sorted[max(1, min(rank, len(sorted)))-1]
}
