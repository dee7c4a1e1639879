package gate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"

	"github.com/knockgate/knockgate/verdict"
)

// portDecider accepts packets to one port and drops the rest.
type portDecider struct {
	accept uint16
	seen   []verdict.Packet
}

func (d *portDecider) Decide(p verdict.Packet, now time.Time) verdict.Decision {
	if d.seen != nil {
		d.seen = append(d.seen, p)
	}
	if p.DstPort == d.accept {
		return verdict.Decision{Verdict: verdict.Accept, Reason: verdict.ReasonUnprotected, Door: verdict.NoDoor, Reset: verdict.NoDoor}
	}
	return verdict.Decision{Verdict: verdict.Drop, Reason: verdict.ReasonNoGrant, Door: verdict.NoDoor, Reset: verdict.NoDoor}
}

type sentVerdict struct {
	id      uint32
	v       int
	mark    uint32
	setMark bool
}

// testQueue is a Queue without a socket whose verdicts land in sent.
func testQueue(t *testing.T, cfg Config, d Decider) (*Queue, *[]sentVerdict) {
	t.Helper()
	q, err := newQueue(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sent := new([]sentVerdict)
	q.setVerdict = func(id uint32, v int, mark uint32, setMark bool) error {
		*sent = append(*sent, sentVerdict{id, v, mark, setMark})
		return nil
	}
	q.decider = d
	return q, sent
}

func TestServe(t *testing.T) {
	type observed struct {
		p verdict.Packet
		d verdict.Decision
	}
	var obs []observed
	cfg := Config{Observe: func(p verdict.Packet, d verdict.Decision, _ time.Duration) { obs = append(obs, observed{p, d}) }}
	dec := &portDecider{accept: 8080, seen: []verdict.Packet{}}
	q, sent := testQueue(t, cfg, dec)

	accept := ipv4(6, src4, dst4, nil, tcp(40000, 8080, verdict.FlagSYN, nil, nil))
	drop := ipv6(6, src6, dst6, tcp(40000, 8081, verdict.FlagSYN, nil, nil))
	garbage := []byte{0x45, 0, 0}
	for i, b := range [][]byte{accept, drop, garbage} {
		id := uint32(100 + i)
		q.handle(nfqueue.Attribute{PacketID: &id, Payload: &b})
	}
	q.handle(nfqueue.Attribute{}) // no packet id

	want := []sentVerdict{{100, nfqueue.NfAccept, 0, false}, {101, nfqueue.NfDrop, 0, false}, {102, nfqueue.NfDrop, 0, false}}
	if fmt.Sprint(*sent) != fmt.Sprint(want) {
		t.Errorf("verdicts %v, want %v", *sent, want)
	}
	if len(dec.seen) != 2 || dec.seen[0].DstPort != 8080 || dec.seen[1].Src != src6 {
		t.Errorf("decider saw %+v, want the two good packets", dec.seen)
	}
	if len(obs) != 3 {
		t.Fatalf("observer saw %d packets, want 3", len(obs))
	}
	if obs[0].d.Verdict != verdict.Accept || obs[1].d.Reason != verdict.ReasonNoGrant {
		t.Errorf("observer saw decisions %+v, %+v", obs[0].d, obs[1].d)
	}
	if obs[2].d != malformedDecision {
		t.Errorf("observer saw %+v for garbage, want %+v", obs[2].d, malformedDecision)
	}
	wantStats := Stats{Packets: 3, Accepted: 1, Dropped: 2, Malformed: 1, ReadErrors: 1}
	if got := q.Stats(); got != wantStats {
		t.Errorf("Stats = %+v, want %+v", got, wantStats)
	}
}

func TestServeVerdictError(t *testing.T) {
	q, _ := testQueue(t, Config{}, &portDecider{accept: 1})
	q.setVerdict = func(uint32, int, uint32, bool) error { return errors.New("sendmsg: no buffer space") }
	b := ipv4(17, src4, dst4, nil, udp(1, 2, nil))
	q.serve(1, 0, b)
	q.serve(2, 0, b)
	if got := q.Stats().VerdictErrors; got != 2 {
		t.Errorf("VerdictErrors = %d, want 2", got)
	}
}

// TestServeAllocs proves our part of the per-packet path allocates nothing:
// parse, decide, mark, verdict and observer, for good and malformed packets.
func TestServeAllocs(t *testing.T) {
	n := 0
	cfg := Config{
		Observe:    func(verdict.Packet, verdict.Decision, time.Duration) { n++ },
		AcceptMark: 0x4b470000, AcceptMask: 0xffff0000,
	}
	q, _ := testQueue(t, cfg, &portDecider{accept: 8080})
	q.setVerdict = func(uint32, int, uint32, bool) error { return nil }
	for _, b := range [][]byte{
		good("ipv4 tcp syn"),
		good("ipv6 udp"),
		bad("ipv4 tcp data offset 4"),
	} {
		if a := testing.AllocsPerRun(1000, func() { q.serve(7, 0x5, b) }); a != 0 {
			t.Errorf("%v allocations per packet, want 0", a)
		}
	}
	if n == 0 {
		t.Error("observer never called")
	}
}

func TestAcceptedMark(t *testing.T) {
	for _, tc := range []struct {
		mark, mask, old, want uint32
	}{
		{0x4b470000, 0xffff0000, 0, 0x4b470000},
		{0x4b470000, 0xffff0000, 0x5, 0x4b470005},        // other tools' low bits kept
		{0x4b470000, 0xffff0000, 0x12340005, 0x4b470005}, // our bits overwritten
		{0x4b470000, 0xffff0000, 0xffffffff, 0x4b47ffff}, // cleared where the mark has zeros
		{0x1, 0x1, 0xfffffff0, 0xfffffff1},               // a one-bit mark
		{0x80000000, 0xffffffff, 0x1234, 0x80000000},     // a full mask replaces all
		{0, 0, 0xdeadbeef, 0xdeadbeef},                   // no mask: untouched
	} {
		q, err := newQueue(Config{AcceptMark: tc.mark, AcceptMask: tc.mask})
		if err != nil {
			t.Fatal(err)
		}
		if got := q.acceptedMark(tc.old); got != tc.want {
			t.Errorf("mark %#x/%#x on %#x = %#x, want %#x", tc.mark, tc.mask, tc.old, got, tc.want)
		}
	}
	if _, err := newQueue(Config{AcceptMark: 0x10000, AcceptMask: 0xff}); err == nil {
		t.Error("newQueue accepted a mark outside its mask")
	}
}

// With an accept mark, accepted packets leave with it, their other mark
// bits kept; dropped and malformed ones are not marked. The packet's mark
// comes from the kernel's NFQA_MARK, absent when it is 0.
func TestServeMarksAccepted(t *testing.T) {
	q, sent := testQueue(t, Config{AcceptMark: 0x4b470000, AcceptMask: 0xffff0000}, &portDecider{accept: 8080})
	accept := ipv4(6, src4, dst4, nil, tcp(40000, 8080, verdict.FlagSYN, nil, nil))
	drop := ipv6(6, src6, dst6, tcp(40000, 8081, verdict.FlagSYN, nil, nil))
	garbage := []byte{0x60}
	low := uint32(0x5)
	for i, in := range []struct {
		b    []byte
		mark *uint32
	}{
		{accept, nil}, {accept, &low}, {drop, &low}, {garbage, nil},
	} {
		id := uint32(i + 1)
		q.handle(nfqueue.Attribute{PacketID: &id, Payload: &in.b, Mark: in.mark})
	}
	want := []sentVerdict{
		{1, nfqueue.NfAccept, 0x4b470000, true},
		{2, nfqueue.NfAccept, 0x4b470005, true},
		{3, nfqueue.NfDrop, 0x5, false},
		{4, nfqueue.NfDrop, 0, false},
	}
	if fmt.Sprint(*sent) != fmt.Sprint(want) {
		t.Errorf("verdicts %v, want %v", *sent, want)
	}
}

func TestReadError(t *testing.T) {
	q, _ := testQueue(t, Config{}, &portDecider{})
	ctx, cancel := context.WithCancel(context.Background())
	enobufs := &netlink.OpError{Op: "receive", Err: os.NewSyscallError("recvmsg", syscall.ENOBUFS)}

	if r := q.readError(ctx, enobufs); r != 0 {
		t.Errorf("ENOBUFS stops reading (%d)", r)
	}
	if r := q.readError(ctx, errors.New("strange")); r != 0 {
		t.Errorf("an unknown error stops reading (%d)", r)
	}
	if r := q.readError(ctx, fmt.Errorf("recvmsg: %w", net.ErrClosed)); r == 0 {
		t.Error("a closed socket does not stop reading")
	}
	cancel()
	if r := q.readError(ctx, os.ErrDeadlineExceeded); r == 0 {
		t.Error("a done context does not stop reading")
	}
	if got, want := q.Stats(), (Stats{ENOBUFS: 1, ReadErrors: 1}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

func TestConfigDefaults(t *testing.T) {
	q, err := newQueue(Config{Queue: 3})
	if err != nil {
		t.Fatal(err)
	}
	if q.cfg.CopyRange != DefaultCopyRange || q.cfg.MaxQueueLen != DefaultMaxQueueLen || q.log == nil {
		t.Errorf("defaults not applied: %+v", q.cfg)
	}
	if _, err := Open(Config{Queue: 3, CopyRange: 40}); err == nil {
		t.Error("Open accepted a copy range too short for ipv6 and tcp headers")
	}
}

func TestRunWithoutDecider(t *testing.T) {
	q, _ := testQueue(t, Config{}, nil)
	if err := q.Run(context.Background(), nil); err == nil {
		t.Error("Run accepted a nil decider")
	}
}

func BenchmarkServe(b *testing.B) {
	q, err := newQueue(Config{})
	if err != nil {
		b.Fatal(err)
	}
	q.setVerdict = func(uint32, int, uint32, bool) error { return nil }
	q.decider = &portDecider{accept: 8080}
	pkt := good("ipv4 tcp syn")
	b.ReportAllocs()
	for b.Loop() {
		q.serve(1, 0, pkt)
	}
}
