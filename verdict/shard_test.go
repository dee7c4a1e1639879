package verdict

import (
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict/fwknop"
)

func shards(e *Engine) int { return len(e.gen.Load().shards) }

func TestShardCount(t *testing.T) {
	for _, c := range []struct {
		p    Policy
		spa  bool
		want int
	}{
		{Policy{MaxSources: DefaultMaxSources, MaxGrants: DefaultMaxGrants, MaxReplay: DefaultMaxReplay, Penalty: DefaultPenalty}, true, 32},
		{Policy{MaxSources: 64, MaxGrants: 10000}, false, 1},
		{Policy{MaxSources: 127, MaxGrants: 10000}, false, 1},
		{Policy{MaxSources: 128, MaxGrants: 10000}, false, 2},
		{Policy{MaxSources: 4096, MaxGrants: 10000}, false, 32},
		{Policy{MaxSources: 1 << 20, MaxGrants: 8}, false, 1},
		// A small penalty box or replay cache counts only when in use.
		{Policy{MaxSources: 4096, MaxGrants: 4096, Penalty: Penalty{MaxSources: 100}}, false, 32},
		{Policy{MaxSources: 4096, MaxGrants: 4096, Penalty: Penalty{Failures: 1, MaxSources: 256}}, false, 4},
		{Policy{MaxSources: 4096, MaxGrants: 4096, MaxReplay: 512}, false, 32},
		{Policy{MaxSources: 4096, MaxGrants: 4096, MaxReplay: 512}, true, 8},
	} {
		if got := shardCount(&c.p, c.spa); got != c.want {
			t.Errorf("%+v spa=%v: %d shards, want %d", c.p, c.spa, got, c.want)
		}
	}
}

// The shards' shares of a cap add up to the policy's cap exactly, so the
// tables hold what the policy says and the metrics report it.
func TestShardSharesAddUpToTheCaps(t *testing.T) {
	for _, max := range []int{64, 1000, 4096, 100_003} {
		p, _, _ := spaPolicy(t)
		p.MaxSources, p.MaxGrants, p.MaxReplay = max, max+7, max+3
		p.Penalty = Penalty{Failures: 1, Within: time.Minute, Ban: time.Minute, MaxSources: max + 5}
		e, err := NewEngine(p, t0)
		if err != nil {
			t.Fatal(err)
		}
		if st := e.Stats(); st.MaxSources != max || st.MaxGrants != max+7 || st.MaxReplay != max+3 || st.MaxPenaltySources != max+5 {
			t.Errorf("max %d over %d shards: %+v", max, shards(e), st)
		}
	}
}

// The integration test's flood, in the engine: 100,000 spoofed IPv6 first
// knocks past max_sources = 4096 over 32 shards leave the table exactly
// full, never over, and a knocker further along keeps its place.
func TestShardedFloodFillsTheTableExactly(t *testing.T) {
	p := testPolicy()
	p.MaxSources = 4096
	e, err := NewEngine(p, t0)
	if err != nil {
		t.Fatal(err)
	}
	if shards(e) != 32 {
		t.Fatalf("%d shards", shards(e))
	}
	ks := knockSSH(carol, 0, 1000)
	e.Decide(ks[0].p, t0)
	e.Decide(ks[1].p, t0)
	for i := 0; i < 100_000; i++ {
		src := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xff, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
		e.Decide(pkt(src, "tcp/7000", uint16(i)), t0.Add(time.Millisecond))
		if i%10_000 == 0 {
			if st := e.Stats(); st.Sources > 4096 {
				t.Fatalf("after %d: %+v", i, st)
			}
		}
	}
	if st := e.Stats(); st.Sources != 4096 || st.MaxSources != 4096 || st.Evictions < 100_000-4096 {
		t.Fatalf("after the flood: %+v", st)
	}
	if d := e.Decide(ks[2].p, t0.Add(time.Second)); d.Reason != ReasonOpened {
		t.Fatalf("knocker's last knock after the flood: %v", d.Reason)
	}
}

// Goroutines deciding at once, as queue readers do, while the daemon's
// other calls (sweep, reload, status, revoke) run: every knocker gets in,
// every source's state stays its own, and go test -race has nothing to
// say. TOTP steps turn over during the run.
func TestDecideConcurrently(t *testing.T) {
	p := totpPolicy()
	p.MaxSources, p.MaxGrants = 1<<14, 1<<14
	p.Doors[0].OpenFor = time.Hour
	p.Penalty = Penalty{Failures: 3, Within: time.Minute, Ban: time.Minute, MaxSources: 1 << 12}
	cfg := p.Doors[2].TOTP
	base := time.Unix(1_800_000_000, 0)
	e, err := NewEngine(p, base)
	if err != nil {
		t.Fatal(err)
	}
	if shards(e) < 2 {
		t.Fatalf("%d shard", shards(e))
	}
	const workers, perWorker = 4, 300
	var clock atomic.Int64 // nanoseconds past base, moved on by every worker
	now := func() time.Time { return base.Add(time.Duration(clock.Add(int64(50 * time.Millisecond)))) }
	// The time of each worker's knocks. Sweeps run at the earliest: a
	// sweep at the shared clock, which the other workers move on, would
	// time out the sequence of a worker the scheduler left behind by
	// 10 s of that clock (a couple of hundred of their knocks), and
	// fail the test about once in a hundred runs.
	var workerAt [workers]atomic.Int64
	earliest := func() time.Time {
		at := int64(math.MaxInt64)
		for w := range workerAt {
			at = min(at, workerAt[w].Load())
		}
		return base.Add(time.Duration(min(at, clock.Load())))
	}
	var wg sync.WaitGroup
	var opened, totpOpened atomic.Int64
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer workerAt[w].Store(math.MaxInt64)
			for i := 0; i < perWorker; i++ {
				src := netip.AddrFrom4([4]byte{10, byte(w), byte(i >> 8), byte(i)})
				// Published before the time is taken, so a sweep never
				// runs later than a knock about to be made.
				workerAt[w].Store(clock.Load())
				at := now()
				var d Decision
				for _, s := range knockSSH(src, 0, uint16(i)) {
					d = e.Decide(s.p, at)
				}
				if d.Reason != ReasonOpened {
					errs <- fmt.Errorf("%v: last knock %v", src, d.Reason)
					return
				}
				opened.Add(1)
				if d := e.Decide(pkt(src, "tcp/22", 1), at.Add(time.Millisecond)); d.Verdict != Accept {
					errs <- fmt.Errorf("%v: connect %v", src, d.Reason)
					return
				}
				// A TOTP knock; another worker may have used the step's
				// sequence first, so a replay is as good an answer.
				switch d := knockTOTP(e, cfg, src, cfg.Counter(at), at); d.Reason {
				case ReasonOpened:
					totpOpened.Add(1)
				case ReasonKnockReplay:
				default:
					errs <- fmt.Errorf("%v: TOTP knock %v", src, d.Reason)
					return
				}
				// Wrong knocks and a flood from spoofed sources.
				e.Decide(pkt(src, "tcp/9000", 7), at)
				e.Decide(pkt(netip.AddrFrom4([4]byte{203, 0, byte(w), byte(i)}), "tcp/7000", 1), at)
			}
		}()
	}
	stop := make(chan struct{})
	var others sync.WaitGroup
	others.Add(1)
	go func() {
		defer others.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			at := earliest()
			e.Sweep(at, nil)
			e.Stats()
			e.Grants(at)
			e.ActiveGrants(at)
			e.Revoke("web", alice, at)
			if _, err := e.Reload(p, at); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	others.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	at := base.Add(time.Duration(clock.Load()))
	if n := opened.Load(); n != workers*perWorker {
		t.Fatalf("%d opened", n)
	}
	if totpOpened.Load() == 0 {
		t.Fatal("no TOTP knock opened")
	}
	// Every grant survived the reloads: each source holds its ssh grant.
	if got := e.ActiveGrants(at)["ssh"]; got != workers*perWorker {
		t.Fatalf("%d ssh grants, want %d", got, workers*perWorker)
	}
}

// An SPA packet sent from several sources at once is used once: the
// replay cache is shared by all shards.
func TestSPAReplayRaceAcrossShards(t *testing.T) {
	p, _, cam := spaPolicy(t)
	now := t0.Add(time.Hour)
	e, _ := NewEngine(p, t0)
	if shards(e) < 2 {
		t.Fatalf("%d shard", shards(e))
	}
	pk := spaPacket(t, cam, alice, now, spaMsg{typ: fwknop.TypeAccess, allow: "0.0.0.0", ports: []string{"tcp/554"}})
	const senders = 16
	var wg sync.WaitGroup
	reasons := make([]Reason, senders)
	for i := range reasons {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := pk
			p.Src = netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
			reasons[i] = e.Decide(p, now).Reason
		}()
	}
	wg.Wait()
	used := 0
	for i, r := range reasons {
		switch r {
		case ReasonOpened:
			used++
		case ReasonSPAReplay:
		default:
			t.Errorf("sender %d: %v", i, r)
		}
	}
	if used != 1 {
		t.Fatalf("the packet opened %d times: %v", used, reasons)
	}
}

// An SPA packet may open a door for another address (allow_any_source);
// that address's grant lives in its own shard, and is made there, also
// when a reload comes between the decision and the grant.
func TestSPAGrantForAnotherShard(t *testing.T) {
	p, _, cam := spaPolicy(t)
	now := t0.Add(time.Hour)
	e, _ := NewEngine(p, t0)
	g := e.gen.Load()
	// An address whose shard is not alice's.
	var other netip.Addr
	for i := 1; ; i++ {
		other = netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
		if g.shardOf(keyOf(other, 0)) != g.shardOf(keyOf(alice, 0)) {
			break
		}
	}
	pk := spaPacket(t, cam, alice, now, spaMsg{typ: fwknop.TypeAccess, allow: other.String(), ports: []string{"tcp/554"}})
	if d := e.Decide(pk, now); d.Reason != ReasonOpened {
		t.Fatal(d.Reason)
	}
	if d := e.Decide(pkt(other, "tcp/554", 1), now); d.Verdict != Accept {
		t.Fatalf("the other address: %v", d.Reason)
	}
	if d := e.Decide(pkt(alice, "tcp/554", 1), now); d.Verdict != Drop {
		t.Fatal("the sender got the grant")
	}

	// A grant decided under the old generation, made after a reload that
	// moved the door to another index and its port to another place.
	old := e.gen.Load()
	far := farGrant{k: keyOf(bob, 2), dur: int64(time.Minute), ports: 1 << 2} // nas's udp/443
	p2 := p
	p2.Doors = []Door{p.Doors[2], p.Doors[0], p.Doors[1], p.Doors[3]}
	p2.Doors[0].Open = ports("udp/443", "tcp/2049")
	if _, err := e.Reload(p2, now); err != nil {
		t.Fatal(err)
	}
	e.grantFar(old, &far, e.nanos(now))
	if d := e.Decide(pkt(bob, "udp/443", 1), now); d.Verdict != Accept || d.Door != 0 {
		t.Fatalf("grant made across a reload: %v door %d", d.Reason, d.Door)
	}
	if d := e.Decide(pkt(bob, "tcp/2049", 1), now); d.Verdict != Drop {
		t.Fatal("the grant grew a port on reload")
	}
}

// The per-packet paths allocate nothing with many shards either
// (BenchmarkDecideParallel reports the same from several goroutines).
func TestShardedDecideDoesNotAllocate(t *testing.T) {
	p, _, _ := spaPolicy(t)
	p.Penalty = DefaultPenalty
	e, _ := NewEngine(p, t0)
	if shards(e) != 32 {
		t.Fatalf("%d shards", shards(e))
	}
	junk := Packet{Dst: gw, Proto: UDP, SrcPort: 1, DstPort: 62201, Payload: []byte("GET / HTTP/1.0\r\n\r\n")}
	knock := knockSSH(alice, 0, 1)
	var i atomic.Uint32
	f := func() {
		n := i.Add(1)
		src := netip.AddrFrom4([4]byte{203, byte(n >> 16), byte(n >> 8), byte(n)})
		for _, s := range knock {
			s.p.Src = src
			e.Decide(s.p, t0.Add(s.at))
		}
		e.Decide(pkt(src, "tcp/22", 1), t0.Add(time.Second))
		e.Decide(pkt(src, "tcp/80", 1), t0.Add(time.Second))
		e.Decide(pkt(src, "tcp/9000", 1), t0.Add(time.Second)) // a failure, counted
		junk.Src = src
		e.Decide(junk, t0.Add(time.Second))
	}
	if n := testing.AllocsPerRun(2000, f); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}
