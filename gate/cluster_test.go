package gate

import (
	"net/netip"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// TestServeAllocsWithCluster runs the real engine behind the queue with
// what a cluster turns on: the shared-event ring, filled by every knock
// here (a one-knock door) until it is full, and the peers' port, which a
// packet from a peer reaches under unprotected = "drop". The per-packet
// path still allocates nothing.
func TestServeAllocsWithCluster(t *testing.T) {
	eng, err := verdict.NewEngine(verdict.Policy{
		Unprotected: verdict.Drop,
		Doors: []verdict.Door{{
			Name: "one", Sequence: []verdict.Port{{Proto: verdict.UDP, Num: 7001}}, SequenceTimeout: time.Second,
			Open: []verdict.Port{{Proto: verdict.TCP, Num: 22}}, OpenFor: time.Hour,
		}},
		MaxSources: 1000, MaxGrants: 1000, MaxReplay: 1000,
		ClusterPort: 8080, ClusterPeers: []netip.Addr{src4},
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	eng.ShareEvents(64)
	var reasons [2]verdict.Reason
	cfg := Config{Observe: func(p verdict.Packet, d verdict.Decision, _ time.Duration) {
		reasons[p.Proto&1] = d.Reason // tcp 6 → 0, udp 17 → 1
	}}
	q, _ := testQueue(t, cfg, eng)
	q.send = func([]byte) error { return nil }
	dgrams := [][]byte{packetMessage(7, nil, good("ipv4 tcp syn")), packetMessage(8, nil, good("ipv6 udp"))}
	if a := testing.AllocsPerRun(1000, func() {
		for range maxBatch / 2 {
			for _, d := range dgrams {
				q.consume(d, 0, false)
			}
		}
		q.flush()
	}); a != 0 && !raceEnabled {
		t.Errorf("%v allocations per batch with the cluster on, want 0", a)
	}
	if reasons != [2]verdict.Reason{verdict.ReasonClusterPeer, verdict.ReasonOpened} {
		t.Errorf("reasons %v, want a cluster peer's packet and a knock that opens", reasons)
	}
	if evs, lost := eng.DrainShared(nil); len(evs) != 64 || lost == 0 {
		t.Errorf("%d events, %d lost: the ring never filled", len(evs), lost)
	}
}
