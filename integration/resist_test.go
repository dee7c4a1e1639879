//go:build integration

package integration

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knockgate/knockgate/internal/synpkt"
	"github.com/knockgate/knockgate/rules"
	"github.com/knockgate/knockgate/verdict"
)

var otpSecret = base64.StdEncoding.EncodeToString([]byte("integration-test-totp-secret-32b"))

const resistDoors = `
penalty {
  failures = 5
  within   = "1m"
  ban      = "5m"
}

door "ssh" {
  sequence         = ["tcp/7000", "udp/8000", "tcp/9000"]
  sequence_timeout = "5s"
  open             = ["tcp/22"]
  open_for         = "30s"
}

door "otp" {
  totp {
    secret_base64 = "` + "%s" + `"
    step          = "30s"
    length        = 4
    ports         = "udp/40000-40999"
  }
  open     = ["tcp/443"]
  open_for = "30s"
}

door "once" {
  sequence        = ["udp/6100", "tcp/6200"]
  open            = ["tcp/2222"]
  open_for        = "30s"
  max_connections = 1
}
`

func resistLab(t *testing.T) *lab {
	l := newLab(t)
	l.doors = fmt.Sprintf(resistDoors, otpSecret)
	l.start()
	return l
}

// otpDoor reads the lab's TOTP door back from its policy, as a client
// holding the secret would.
func (l *lab) otpDoor() *verdict.TOTP {
	l.t.Helper()
	p, err := rules.Load(l.config())
	if err != nil {
		l.t.Fatal(err)
	}
	for _, d := range p.Doors {
		if d.TOTP != nil {
			return d.TOTP
		}
	}
	l.t.Fatal("no totp door")
	return nil
}

func knockArgs(seq []verdict.Port) []string {
	var out []string
	for _, k := range seq {
		out = append(out, fmt.Sprintf("%d:%s", k.Num, k.Proto))
	}
	return out
}

// A TOTP door opens for the sequence of the current step, computed by
// knockgate's own client or printed for Debian's knock, and refuses the
// sequence of the step before the previous one.
func TestTOTPDoorOpens(t *testing.T) {
	l := resistLab(t)
	cfg := l.otpDoor()
	// Knock well inside a step, so the old sequence is two steps old for
	// the whole test.
	if left := time.Until(cfg.StepEnds(cfg.Counter(time.Now()))); left < 8*time.Second {
		time.Sleep(left + 100*time.Millisecond)
	}
	old := cfg.Sequence(cfg.Counter(time.Now())-2, nil)
	l.knock("c1", v4, v4.gwForC1, knockArgs(old)...)
	l.wantTimeout("c1", v4.gwForC1, 443)

	l.must("ip", "netns", "exec", l.ns("c1"), binPath, "knock", "--door", "otp", "--config", l.config(), v4.gwForC1.String())
	l.wantConnect("c1", v4.gwForC1, 443)

	// The printed sequence works with Debian's knock, for the same source
	// again; from another source it is a replay of a used sequence.
	out := l.must(binPath, "sequence", "--door", "otp", "--config", l.config())
	lines := strings.Split(out, "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[1], "knock -d 100 HOST ") || !strings.HasPrefix(lines[2], "good until ") {
		t.Fatalf("sequence output:\n%s", out)
	}
	seqArgs := strings.Fields(strings.TrimPrefix(lines[1], "knock -d 100 HOST "))
	l.knock("c1", v4, v4.gwForC1, seqArgs...)
	l.wantConnect("c1", v4.gwForC1, 443)
	l.knock("c2", v4, v4.gwForC2, seqArgs...)
	l.waitLog("TOTP sequence replayed by another source", 3*time.Second, "source="+v4.c2.String())
	l.wantTimeout("c2", v4.gwForC2, 443)
}

// max_connections = 1 admits one connection and refuses the next from the
// same source, while the first one keeps working.
func TestMaxConnectionsOne(t *testing.T) {
	l := resistLab(t)
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			l.t = t
			l.knock("c1", fam, fam.gwForC1, "6100:udp", "6200")
			c, banner := l.dial("c1", netip.AddrPortFrom(fam.gwForC1, 2222))
			if banner != "lan-ssh" {
				t.Fatalf("banner %q", banner)
			}
			l.waitLog("grant used up", 2*time.Second, "door=once", "source="+fam.c1.String())
			l.wantTimeout("c1", fam.gwForC1, 2222)
			echo(t, c)
		})
	}
}

// A source that brute-forces is put in the penalty box: its correct knock
// right after is ignored; another source is not affected.
func TestPenaltyBoxRefusesBruteForcer(t *testing.T) {
	l := resistLab(t)
	for i := 0; i < 5; i++ {
		l.knock("c1", v4, v4.gwForC1, "9000")
	}
	l.waitLog("source penalized", 2*time.Second, "source="+v4.c1.String())
	l.knock("c1", v4, v4.gwForC1, "7000", "8000:udp", "9000")
	l.wantTimeout("c1", v4.gwForC1, 22)
	l.wantConnect("c1", v4.gwForC1, 80) // public services stay reachable
	l.knock("c2", v4, v4.gwForC2, "7000", "8000:udp", "9000")
	l.wantConnect("c2", v4.gwForC2, 22)
}

// A flood of first knocks from many spoofed sources, far past max_sources,
// while a legitimate client knocks and connects: memory stays at the cap and
// the client gets in. The flood is paced to what the queue carries, so the
// test measures the table, not the NFQUEUE capacity (make bench does that):
// a spoofed first knock and a knocker's first knock look alike, so a knocker
// is safe from eviction once past its first knock, and at its first knock
// for as long as max_sources / flood rate (here 4096 / 20,000 pps, 200ms;
// the default 100,000 entries hold against far more than a queue delivers).
func TestFloodDoesNotLockOutAKnocker(t *testing.T) {
	l := newLab(t)
	l.doors = fmt.Sprintf(resistDoors, otpSecret)
	l.gateExtra = "  max_sources = 4096"
	l.logLevel = "info" // a log line per spoofed knock would be the bottleneck
	l.start()

	done := make(chan floodResult, 1)
	go func() { done <- l.flood6("c1", v6.gwForC1, 7000, 100_000, 20_000, 15*time.Second) }()
	time.Sleep(time.Second) // the table is full by now
	for _, fam := range families {
		args := []string{"netns", "exec", l.ns("c2"), "knock", fam.knockArg, "-d", "20", fam.gwForC2.String(), "7000", "8000:udp", "9000"}
		l.must("ip", args...)
		l.wantConnect("c2", fam.gwForC2, 22)
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	t.Logf("flood: %d spoofed SYNs from distinct sources in %v", res.sent, res.took)
	var st struct {
		Tracked int    `json:"tracked_sources"`
		Max     int    `json:"max_sources"`
		Evicted uint64 `json:"evictions"`
	}
	if err := json.Unmarshal([]byte(l.must(binPath, "status", "--socket", l.socket(), "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Max != 4096 || st.Tracked > 4096 || st.Evicted == 0 {
		t.Fatalf("after the flood: %+v; want at most 4096 tracked and evictions", st)
	}
	t.Logf("engine after the flood: %+v", st)
	t.Logf("%s", grep(l.scrape("/metrics"), "knockgate_tracked_sources", "knockgate_evictions_total", "knockgate_kernel_queue_dropped_total", "knockgate_enobufs_total"))
}

func grep(body string, prefixes ...string) string {
	var out []string
	for _, line := range strings.Split(body, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				out = append(out, line)
			}
		}
	}
	return strings.Join(out, "\n")
}

type floodResult struct {
	sent int
	took time.Duration
	err  error
}

// flood6 sends up to count TCP SYNs to dst:port from ns at about rate per
// second, each from a new spoofed source in 2001:db8:ff00::/40 (inside the
// documentation prefix, routed nowhere), and stops after count packets or
// max time, whichever comes first.
func (l *lab) flood6(ns string, dst netip.Addr, port uint16, count, rate int, max time.Duration) floodResult {
	var res floodResult
	var fd int
	err := l.inNS(ns, func() error {
		var err error
		// IPPROTO_RAW implies that we write the IPv6 header ourselves.
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_RAW)
		return err
	})
	if err != nil {
		return floodResult{err: fmt.Errorf("raw socket: %w", err)}
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrInet6{Addr: dst.As16()}
	pkt := make([]byte, synpkt.Len6)
	start := time.Now()
	for res.sent < count && time.Since(start) < max {
		// Pace in bursts of 100 so the sender costs little CPU.
		if due := start.Add(time.Duration(res.sent) * time.Second / time.Duration(rate)); time.Until(due) > 0 {
			time.Sleep(time.Until(due))
		}
		for i := 0; i < 100 && res.sent < count; i++ {
			var src [16]byte
			copy(src[:], []byte{0x20, 0x01, 0x0d, 0xb8, 0xff})
			binary.BigEndian.PutUint64(src[8:], rand.Uint64())
			binary.BigEndian.PutUint16(src[5:], uint16(res.sent>>16))
			synpkt.IPv6(pkt, src, dst.As16(), uint16(1024+rand.IntN(60000)), port)
			if err := unix.Sendto(fd, pkt, 0, sa); err != nil {
				if err == unix.ENOBUFS {
					time.Sleep(time.Millisecond)
					continue
				}
				res.err = err
				return res
			}
			res.sent++
		}
	}
	res.took = time.Since(start)
	return res
}
