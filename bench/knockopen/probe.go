package main

import (
	"errors"
	"net/netip"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// probeConfig bounds the prober: a new connect attempt (a new socket, so a
// new flow with its own source port) every interval; an attempt still
// unanswered after attemptTimeout is abandoned (its SYN was dropped; closing
// a socket in SYN_SENT sends nothing); the whole probe gives up after
// giveUp, which is then a failure.
type probeConfig struct {
	interval       time.Duration
	attemptTimeout time.Duration
	giveUp         time.Duration
}

// maxAttempts bounds a probe by count as well as by time.
func (c probeConfig) maxAttempts() int { return int(c.giveUp/c.interval) + 1 }

type result struct {
	ok       bool
	elapsed  time.Duration // from t0 to the successful connect's completion
	attempts int           // connect attempts started
	err      error         // a local error (socket, bind), not a timeout
}

// dialStart opens a non-blocking TCP socket bound to src and starts a
// connect to dst:port: the kernel sends the SYN before connect returns.
// It returns the socket, and whether the connect already completed.
func dialStart(src, dst netip.Addr, port int) (int, bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, false, err
	}
	// Pick the source port at connect time, against the 4-tuple, rather
	// than at bind time against every socket bound to src.
	unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
		unix.Close(fd)
		return -1, false, err
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: dst.As4()})
		if err != unix.EINTR {
			break
		}
	}
	switch {
	case err == nil:
		return fd, true, nil
	case errors.Is(err, unix.EINPROGRESS):
		return fd, false, nil
	default:
		unix.Close(fd)
		return -1, false, err
	}
}

// probe tries to connect from src to dst:port until one attempt completes
// a handshake, and reports the time from t0 to that completion. It must run
// on a thread inside the client namespace (an nsWorker).
func probe(src, dst netip.Addr, port int, t0 time.Time, cfg probeConfig) result {
	type attempt struct {
		fd    int
		start time.Time
	}
	var (
		pend       []attempt
		pfds       []unix.PollFd
		res        result
		nextLaunch = time.Now()
		deadline   = t0.Add(cfg.giveUp)
		maxN       = cfg.maxAttempts()
	)
	defer func() {
		for _, a := range pend {
			unix.Close(a.fd)
		}
	}()
	for {
		now := time.Now()
		if now.After(deadline) {
			return res
		}
		if !now.Before(nextLaunch) && res.attempts < maxN {
			fd, done, err := dialStart(src, dst, port)
			if err != nil {
				res.err = err
				return res
			}
			res.attempts++
			if done {
				res.ok, res.elapsed = true, time.Since(t0)
				unix.Close(fd)
				return res
			}
			pend = append(pend, attempt{fd, now})
			nextLaunch = now.Add(cfg.interval)
		}
		// Abandon attempts whose SYN went unanswered.
		kept := pend[:0]
		for _, a := range pend {
			if now.Sub(a.start) > cfg.attemptTimeout {
				unix.Close(a.fd)
				continue
			}
			kept = append(kept, a)
		}
		pend = kept
		// Wait for any attempt to complete, until the next launch.
		wait := time.Until(nextLaunch)
		if res.attempts >= maxN {
			wait = time.Until(deadline)
		}
		if wait < 0 {
			wait = 0
		}
		pfds = pfds[:0]
		for _, a := range pend {
			pfds = append(pfds, unix.PollFd{Fd: int32(a.fd), Events: unix.POLLOUT})
		}
		ts := unix.NsecToTimespec(wait.Nanoseconds())
		n, err := unix.Ppoll(pfds, &ts, nil)
		if err != nil && err != unix.EINTR {
			res.err = err
			return res
		}
		if n <= 0 {
			continue
		}
		done := time.Now()
		for i, p := range pfds {
			if p.Revents == 0 {
				continue
			}
			soErr, err := unix.GetsockoptInt(int(p.Fd), unix.SOL_SOCKET, unix.SO_ERROR)
			if err == nil && soErr == 0 {
				res.ok, res.elapsed = true, done.Sub(t0)
				return res
			}
			// Refused or unreachable: this attempt is over.
			unix.Close(int(p.Fd))
			pend[i].fd = -1
		}
		kept = pend[:0]
		for _, a := range pend {
			if a.fd >= 0 {
				kept = append(kept, a)
			}
		}
		pend = kept
	}
}

// knockThenProbe sends the knock sequence from src to dst as TCP SYNs (the
// first packets of non-blocking connects), gap apart, then probes port. t0
// is taken as soon as the last knock's connect has returned, by which time
// the kernel has handed its SYN to the link.
func knockThenProbe(src, dst netip.Addr, seq []int, gap time.Duration, port int, cfg probeConfig) result {
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for i, p := range seq {
		if i > 0 {
			time.Sleep(gap)
		}
		fd, _, err := dialStart(src, dst, p)
		if err != nil {
			return result{err: err}
		}
		fds = append(fds, fd)
	}
	return probe(src, dst, port, time.Now(), cfg)
}

// stats of the successful trials' times.
type stats struct {
	n, failures              int
	min, p50, p90, p99, max  time.Duration
	attemptsP50, attemptsMax int
	localErrors              int
	firstErr                 error
}

func summarize(rs []result) stats {
	var s stats
	var ds []time.Duration
	var as []int
	for _, r := range rs {
		s.n++
		if r.err != nil {
			s.localErrors++
			if s.firstErr == nil {
				s.firstErr = r.err
			}
		}
		if !r.ok {
			s.failures++
			continue
		}
		ds = append(ds, r.elapsed)
		as = append(as, r.attempts)
	}
	if len(ds) == 0 {
		return s
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	sort.Ints(as)
	s.min, s.max = ds[0], ds[len(ds)-1]
	s.p50, s.p90, s.p99 = pct(ds, 50), pct(ds, 90), pct(ds, 99)
	s.attemptsP50, s.attemptsMax = as[(len(as)-1)/2], as[len(as)-1]
	return s
}

// pct is the nearest-rank percentile of sorted values.
func pct(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}
