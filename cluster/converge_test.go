package cluster

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// BenchmarkConverge measures how a gateway cut off from its two peers for
// 30 s catches up: three memberlist nodes on 127.0.0.1 with the daemon's
// settings (push/pull every 5 s, join retried every 5 s, probes every
// 1 s), gw3's traffic dropped both ways while gw1 and gw2 publish 10,000
// grants between them, then the cut healed. It reports the time from the
// heal until gw3's store holds all 10,000 (converge-s), and what gw3
// received meanwhile, in cluster payload bytes (not counting memberlist's
// framing and encryption): update messages and full states, in all and
// per grant. One operation is one whole partition: run it with
// -benchtime 1x.
func BenchmarkConverge(b *testing.B) {
	if testing.Short() {
		b.Skip("a 30 s partition")
	}
	for range b.N {
		benchConverge(b, 30*time.Second, 10_000)
	}
}

// The daemon's settings (daemon/cluster.go, and MemberlistConfig's
// defaults for what it leaves out).
const (
	convergePushPull  = 5 * time.Second
	convergeRetryJoin = 5 * time.Second
)

func benchConverge(b *testing.B, cut time.Duration, grants int) {
	b.StopTimer()
	var got atomic.Int64 // grants gw3's engine took
	part := &partition{}
	nodes := benchNodes(b, 3, func(i int, mc *MemberlistConfig) {
		mc.PushPull, mc.RetryJoin = convergePushPull, convergeRetryJoin
		if i == 2 {
			mc.wrap = part.wrap
		}
	}, func(i int, _ Grant) {
		if i == 2 {
			got.Add(1)
		}
	})
	meet := func(want int, what string) {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if nodes[0].Stats().Members == want && nodes[1].Stats().Members == want {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("gw1 and gw2 did not see %s: %d and %d members", what, nodes[0].Stats().Members, nodes[1].Stats().Members)
			}
		}
	}
	meet(3, "all three")

	part.cut.Store(true)
	start := time.Now()
	every := cut * 9 / 10 / time.Duration(grants)
	for i := range grants {
		if d := time.Until(start.Add(time.Duration(i) * every)); d > 0 {
			time.Sleep(d)
		}
		now := time.Now()
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		// A send error is expected while gw1 and gw2 still think gw3
		// alive; the merge stands.
		nodes[i%2].Publish(Update{Grants: []Grant{{Door: "ssh", Source: src, Opened: now, Until: now.Add(time.Hour)}}})
	}
	time.Sleep(time.Until(start.Add(cut)))
	if n := got.Load(); n != 0 {
		b.Fatalf("gw3 received %d grants through the partition", n)
	}
	// The cut lasted long enough for memberlist to declare gw3 dead, as
	// a real partition of 30 s does.
	meet(2, "gw3 gone")
	before := nodes[2].Stats()

	part.cut.Store(false)
	healed := time.Now()
	b.StartTimer()
	for deadline := healed.Add(60 * time.Second); got.Load() < int64(grants); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("gw3 holds %d of %d grants a minute after the heal", got.Load(), grants)
		}
	}
	took := time.Since(healed)
	b.StopTimer()
	if n := len(nodes[2].Grants(time.Now())); n != grants {
		b.Fatalf("gw3's store holds %d grants, want %d", n, grants)
	}
	after := nodes[2].Stats()
	upd := after.BytesIn - before.BytesIn
	state := after.StateBytesIn - before.StateBytesIn
	b.ReportMetric(took.Seconds(), "converge-s")
	b.ReportMetric(float64(upd), "update-bytes-in")
	b.ReportMetric(float64(state), "state-bytes-in")
	b.ReportMetric(float64(after.StatesIn-before.StatesIn), "states-in")
	b.ReportMetric(float64(upd+state)/float64(grants), "B/grant-in")
}

// partition drops a node's memberlist traffic both ways while cut is set,
// as a firewall dropping its cluster port would: datagrams it sends or
// receives vanish, its connection attempts hang until their timeout. One
// difference from a DROP rule: a peer's connection to it is accepted by
// the kernel and closed here, so the peer sees an early EOF, not a
// timeout.
type partition struct {
	cut atomic.Bool
}

func (p *partition) wrap(t memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
	w := &cutTransport{NodeAwareTransport: t, p: p, packets: make(chan *memberlist.Packet),
		streams: make(chan net.Conn), done: make(chan struct{})}
	w.wg.Go(func() {
		for {
			select {
			case pkt := <-t.PacketCh():
				if p.cut.Load() {
					continue
				}
				select {
				case w.packets <- pkt:
				case <-w.done:
					return
				}
			case <-w.done:
				return
			}
		}
	})
	w.wg.Go(func() {
		for {
			select {
			case c := <-t.StreamCh():
				if p.cut.Load() {
					c.Close()
					continue
				}
				select {
				case w.streams <- c:
				case <-w.done:
					c.Close()
					return
				}
			case <-w.done:
				return
			}
		}
	})
	return w
}

type cutTransport struct {
	memberlist.NodeAwareTransport
	p       *partition
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	wg      sync.WaitGroup
}

var errCut = errors.New("i/o timeout (partitioned)")

func (t *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.p.cut.Load() {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteTo(b, addr)
}

func (t *cutTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.p.cut.Load() {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteToAddress(b, a)
}

func (t *cutTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.p.cut.Load() {
		t.hang(timeout)
		return nil, errCut
	}
	return t.NodeAwareTransport.DialTimeout(addr, timeout)
}

func (t *cutTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.p.cut.Load() {
		t.hang(timeout)
		return nil, errCut
	}
	return t.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

// hang waits out a connection attempt's timeout, or the transport's end.
func (t *cutTransport) hang(timeout time.Duration) {
	select {
	case <-time.After(timeout):
	case <-t.done:
	}
}

func (t *cutTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *cutTransport) StreamCh() <-chan net.Conn           { return t.streams }

func (t *cutTransport) Shutdown() error {
	close(t.done)
	err := t.NodeAwareTransport.Shutdown()
	t.wg.Wait()
	return err
}
