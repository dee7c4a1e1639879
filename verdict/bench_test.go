package verdict

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// manyDoors builds a policy of n doors with three-knock sequences, so the
// port tables are as full as a large policy makes them.
func manyDoors(n, maxSources int) Policy {
	p := Policy{Unprotected: Accept, MaxSources: maxSources, MaxGrants: maxSources}
	for i := 0; i < n; i++ {
		proto := "tcp"
		if i%2 == 1 {
			proto = "udp"
		}
		base := 10000 + (i/2)*3
		p.Doors = append(p.Doors, Door{
			Name:            fmt.Sprintf("door%d", i),
			Sequence:        ports(fmt.Sprintf("%s/%d", proto, base), fmt.Sprintf("%s/%d", proto, base+1), fmt.Sprintf("%s/%d", proto, base+2)),
			SequenceTimeout: 10 * time.Second,
			Open:            ports(fmt.Sprintf("tcp/%d", 1+i%9000)),
			OpenFor:         time.Hour,
		})
	}
	return p
}

func srcN(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// BenchmarkDecide measures one decision against policies of 1 to 10,000
// doors with up to a million sources holding state: a mix of knocks that
// advance, connects by granted and ungranted sources, and public traffic.
func BenchmarkDecide(b *testing.B) {
	for _, doors := range []int{1, 100, 10000} {
		for _, sources := range []int{1, 1000, 1_000_000} {
			b.Run(fmt.Sprintf("doors=%d/sources=%d", doors, sources), func(b *testing.B) {
				e, pkts, now := decideBench(b, doors, sources)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					e.Decide(pkts[i&4095], now)
				}
			})
		}
	}
}

// decideBench builds the engine and packets of BenchmarkDecide.
func decideBench(b *testing.B, doors, sources int) (*Engine, []Packet, time.Time) {
	p := manyDoors(doors, sources)
	e, err := NewEngine(p, t0)
	if err != nil {
		b.Fatal(err)
	}
	// Half the sources hold a grant, half are mid-sequence.
	for i := 0; i < sources; i++ {
		d := p.Doors[i%doors]
		n := len(d.Sequence)
		if i%2 == 1 {
			n--
		}
		for k := 0; k < n; k++ {
			e.Decide(Packet{Src: srcN(i), Proto: d.Sequence[k].Proto, DstPort: d.Sequence[k].Num, SrcPort: uint16(k + 1), TCPFlags: FlagSYN}, t0)
		}
	}
	pkts := make([]Packet, 4096)
	for i := range pkts {
		s := (i * 7919) % sources
		d := p.Doors[s%doors]
		switch i % 4 {
		case 0: // granted or ungranted connect
			pkts[i] = Packet{Src: srcN(s), Proto: TCP, DstPort: d.Open[0].Num, SrcPort: 40000, TCPFlags: FlagSYN}
		case 1: // public service
			pkts[i] = Packet{Src: srcN(s), Proto: TCP, DstPort: 443, SrcPort: 40000, TCPFlags: FlagSYN}
		case 2: // retransmit of a knock
			pkts[i] = Packet{Src: srcN(s), Proto: d.Sequence[0].Proto, DstPort: d.Sequence[0].Num, SrcPort: 1, TCPFlags: FlagSYN}
		case 3: // established-looking ACK that conntrack picked up
			pkts[i] = Packet{Src: srcN(s), Proto: TCP, DstPort: 80, SrcPort: 40000, TCPFlags: FlagACK}
		}
	}
	return e, pkts, t0.Add(time.Second)
}

// BenchmarkDecideParallel runs BenchmarkDecide's mix from several
// goroutines at once, as several queue readers do, with GOMAXPROCS from 1
// to the machine's CPUs: ns/op is wall time per decision, so it falls as
// throughput scales. With one lock for the whole engine it would not.
func BenchmarkDecideParallel(b *testing.B) {
	e, pkts, now := decideBench(b, 100, 100_000)
	if n := len(e.gen.Load().shards); n < 2 {
		b.Fatalf("%d shard", n)
	}
	for procs := 1; procs <= runtime.NumCPU(); procs *= 2 {
		b.Run(fmt.Sprintf("procs=%d", procs), func(b *testing.B) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			// Each goroutine gets its own sources, as each queue does:
			// --queue-balance picks the queue by a hash of the addresses,
			// so a source's packets stay on one queue. Their shards are
			// shared all the same.
			parts := make([][]Packet, procs)
			for _, p := range pkts {
				a := p.Src.As4()
				w := (int(a[1])<<16 | int(a[2])<<8 | int(a[3])) % procs
				parts[w] = append(parts[w], p)
			}
			var next atomic.Uint32
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				part := parts[int(next.Add(1)-1)%procs]
				for i := 0; pb.Next(); i++ {
					if i == len(part) {
						i = 0
					}
					e.Decide(part[i], now)
				}
			})
		})
	}
}

// BenchmarkStatePerSource reports the memory a tracked source costs: the
// knock table's slots (as allocated, spare slots included) and the
// shards' own structs, over max_sources. The tables are allocated whole
// at start, so this is what a policy pays whether or not the sources
// come; B/grant is the same for the grant table over max_grants.
func BenchmarkStatePerSource(b *testing.B) {
	for _, max := range []int{4096, DefaultMaxSources, 1_000_000} {
		b.Run(fmt.Sprintf("max_sources=%d", max), func(b *testing.B) {
			p := testPolicy()
			p.MaxSources = max
			e, err := NewEngine(p, t0)
			if err != nil {
				b.Fatal(err)
			}
			g := e.gen.Load()
			var progressBytes, grantBytes uintptr
			for i := range g.shards {
				s := &g.shards[i]
				progressBytes += unsafe.Sizeof(s.progress.slots[0]) * uintptr(len(s.progress.slots))
				grantBytes += unsafe.Sizeof(s.grants.slots[0]) * uintptr(len(s.grants.slots))
			}
			shardBytes := unsafe.Sizeof(g.shards[0]) * uintptr(len(g.shards))
			st := e.Stats()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				_ = e.Stats()
			}
			b.ReportMetric(float64(progressBytes+shardBytes)/float64(st.MaxSources), "B/source")
			b.ReportMetric(float64(grantBytes)/float64(st.MaxGrants), "B/grant")
			b.ReportMetric(float64(len(g.shards)), "shards")
		})
	}
}

// BenchmarkKnockFlood measures the cost of a flood of first knocks from
// spoofed sources into a full table, where every packet evicts.
func BenchmarkKnockFlood(b *testing.B) {
	p := testPolicy()
	p.MaxSources = 100_000
	e, err := NewEngine(p, t0)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer() // the tables allocated at start are not the flood's
	for i := 0; i < b.N; i++ {
		e.Decide(Packet{Src: srcN(i), Proto: TCP, DstPort: 7000, SrcPort: 1, TCPFlags: FlagSYN}, t0)
	}
}
