package cluster

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// BenchmarkPropagation measures how long a grant published on one of three
// gateways (memberlist on 127.0.0.1) takes to be usable on the two others:
// from Publish to the receiving engine's ApplyGrant, at 10 and 1,000
// grants a second. Each operation is one grant, paced to the rate, so run
// it with -benchtime 10s or so for a p99 worth the name. It reports the
// 50th and 99th percentile and the grants that never arrived (a full-state
// exchange would repair those, later than this measures).
func BenchmarkPropagation(b *testing.B) {
	for _, rate := range []int{10, 1000} {
		b.Run(fmt.Sprintf("nodes=3/rate=%d", rate), func(b *testing.B) { benchPropagation(b, rate) })
	}
}

// benchNodes starts n nodes, gw1 to gwn, on 127.0.0.1 with one key, the
// others joining gw1, each with an engine that ApplyGrant feeds; applied,
// when set, is called for each grant node i's engine took. tune adjusts
// node i's MemberlistConfig. The nodes close when the benchmark ends.
func benchNodes(b *testing.B, n int, tune func(i int, mc *MemberlistConfig), applied func(i int, g Grant)) []*Node {
	pol := verdict.Policy{Doors: []verdict.Door{{Name: "ssh", Sequence: []verdict.Port{{Proto: verdict.UDP, Num: 7000}},
		SequenceTimeout: time.Second, Open: []verdict.Port{{Proto: verdict.TCP, Num: 22}}, OpenFor: time.Hour}},
		MaxGrants: 1 << 20}
	key := NewKey()
	limits := Limits{Door: func(string) (time.Duration, bool) { return time.Hour, true }}
	var nodes []*Node
	var first netip.AddrPort
	for i := range n {
		name := fmt.Sprintf("gw%d", i+1)
		eng, err := verdict.NewEngine(pol, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		cfg := Config{Name: name, Limits: limits, Apply: func(ch Changes) {
			now := time.Now()
			for _, g := range ch.Grants {
				if err := eng.ApplyGrant(g.Door, g.Source, g.Ports, g.Opened, g.Until, now); err != nil {
					b.Error(err)
				}
				if applied != nil {
					applied(i, g)
				}
			}
		}}
		mc := MemberlistConfig{Name: name, Bind: netip.MustParseAddrPort("127.0.0.1:0"), Key: key, RetryJoin: 100 * time.Millisecond}
		if i > 0 {
			mc.Peers = []string{first.String()}
		}
		if tune != nil {
			tune(i, &mc)
		}
		node, err := NewNode(cfg, Memberlist(mc))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { node.Close() })
		if i == 0 {
			first = node.Members()[0].Addr
		}
		nodes = append(nodes, node)
	}
	return nodes
}

func benchPropagation(b *testing.B, rate int) {
	var (
		mu      sync.Mutex
		sentAt  = map[netip.Addr]time.Time{}
		took    []time.Duration
		arrived atomic.Int64
	)
	nodes := benchNodes(b, 3, nil, func(_ int, g Grant) {
		usable := time.Now()
		mu.Lock()
		took = append(took, usable.Sub(sentAt[g.Source]))
		mu.Unlock()
		arrived.Add(1)
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if nodes[0].Stats().Members == 3 && nodes[1].Stats().Members == 3 && nodes[2].Stats().Members == 3 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the three nodes did not meet")
		}
	}
	every := time.Second / time.Duration(rate)
	b.ResetTimer()
	next := time.Now()
	for i := range b.N {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		next = next.Add(every)
		now := time.Now()
		mu.Lock()
		sentAt[src] = now
		mu.Unlock()
		if _, err := nodes[0].Publish(Update{Grants: []Grant{{Door: "ssh", Source: src, Opened: now, Until: now.Add(time.Hour)}}}); err != nil {
			b.Fatal(err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); arrived.Load() < int64(2*b.N) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	got := int(arrived.Load())
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(took)
	if len(took) > 0 {
		b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(took[min(len(took)-1, len(took)*99/100)].Microseconds()), "p99-µs")
	}
	b.ReportMetric(float64(2*b.N-got), "lost")
}
