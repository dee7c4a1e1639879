package gate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

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

// verdictMsg is one verdict message as the kernel reads it.
type verdictMsg struct {
	id      uint32
	v       uint32
	mark    uint32
	setMark bool
	batch   bool
}

// decodeVerdicts reads a buffer of verdict messages back, failing the
// test on anything the kernel would refuse.
func decodeVerdicts(t testing.TB, b []byte, queue uint16) []verdictMsg {
	t.Helper()
	var out []verdictMsg
	for len(b) > 0 {
		typ, body, rest, err := nextMessage(b, false)
		if err != nil {
			t.Fatalf("verdict buffer: %v", err)
		}
		if f := native.Uint16(b[6:8]); f != nlmFRequest {
			t.Errorf("verdict flags %#x, want NLM_F_REQUEST only", f)
		}
		b = rest
		if got := binary.BigEndian.Uint16(body[2:4]); got != queue {
			t.Errorf("verdict for queue %d, want %d", got, queue)
		}
		m := verdictMsg{batch: typ == nfqnlMsgVerdictBatch}
		if typ != nfqnlMsgVerdict && typ != nfqnlMsgVerdictBatch {
			t.Fatalf("message type %#x is no verdict", typ)
		}
		for a := body[nfgenLen:]; len(a) > 0; {
			n := int(native.Uint16(a[0:2]))
			data := a[nlaHeaderLen:n]
			switch native.Uint16(a[2:4]) {
			case nfqaVerdictHdr:
				m.v, m.id = binary.BigEndian.Uint32(data[0:4]), binary.BigEndian.Uint32(data[4:8])
			case nfqaMark:
				m.mark, m.setMark = binary.BigEndian.Uint32(data), true
			default:
				t.Errorf("unexpected verdict attribute %d", native.Uint16(a[2:4]))
			}
			a = a[nlAlign(n):]
		}
		out = append(out, m)
	}
	return out
}

// kernelQueue models what nfnetlink_queue does with verdicts: packets wait
// by id until a verdict names them, a batch verdict settles every waiting
// packet up to its id, and a verdict for an id not waiting is an error.
type kernelQueue struct {
	t       testing.TB
	waiting []uint32
	settled map[uint32]verdictMsg
}

func newKernelQueue(t testing.TB) *kernelQueue {
	return &kernelQueue{t: t, settled: map[uint32]verdictMsg{}}
}

func (k *kernelQueue) apply(msgs []verdictMsg) {
	for _, m := range msgs {
		if !m.batch {
			i := slices.Index(k.waiting, m.id)
			if i < 0 {
				k.t.Errorf("verdict for packet %d, which is not waiting (ENOENT)", m.id)
				continue
			}
			k.waiting = slices.Delete(k.waiting, i, i+1)
			k.settled[m.id] = m
			continue
		}
		k.waiting = slices.DeleteFunc(k.waiting, func(id uint32) bool {
			if int32(id-m.id) > 0 {
				return false
			}
			s := m
			s.id = id
			k.settled[id] = s
			return true
		})
	}
}

type sentVerdict struct {
	id      uint32
	v       uint32
	mark    uint32
	setMark bool
}

// sent lists the verdicts the packets ids got, in that order, and checks
// that no packet is left waiting.
func (k *kernelQueue) sent(ids ...uint32) []sentVerdict {
	k.t.Helper()
	if len(k.waiting) > 0 {
		k.t.Errorf("packets %v still waiting for a verdict", k.waiting)
	}
	var out []sentVerdict
	for _, id := range ids {
		m, ok := k.settled[id]
		if !ok {
			k.t.Errorf("packet %d got no verdict", id)
			continue
		}
		out = append(out, sentVerdict{id, m.v, m.mark, m.setMark})
	}
	return out
}

// testQueue is a Queue without a socket whose verdicts reach a model of
// the kernel's queue.
func testQueue(t *testing.T, cfg Config, d Decider) (*Queue, *kernelQueue) {
	t.Helper()
	q, err := newQueue(cfg)
	if err != nil {
		t.Fatal(err)
	}
	k := newKernelQueue(t)
	q.send = func(b []byte) error {
		k.apply(decodeVerdicts(t, b, cfg.Queue))
		return nil
	}
	q.decider = d
	return q, k
}

// serve queues a packet in the kernel model and has q serve it.
func (k *kernelQueue) serve(q *Queue, id, mark uint32, b []byte) {
	k.waiting = append(k.waiting, id)
	q.consume(packetMessage(id, &mark, b), 0, false)
}

// packetMessage builds the NFQNL_MSG_PACKET the kernel sends for a packet.
func packetMessage(id uint32, mark *uint32, payload []byte) []byte {
	var attrs []byte
	attr := func(typ uint16, data []byte) {
		h := make([]byte, nlaHeaderLen)
		putAttr(h, typ, len(data))
		attrs = append(attrs, h...)
		attrs = append(attrs, data...)
		attrs = append(attrs, make([]byte, nlAlign(len(data))-len(data))...)
	}
	hdr := make([]byte, 7)
	binary.BigEndian.PutUint32(hdr, id)
	binary.BigEndian.PutUint16(hdr[4:], 0x0800)
	hdr[6] = 0 // NF_INET_PRE_ROUTING
	attr(nfqaPacketHdr, hdr)
	if mark != nil {
		attr(nfqaMark, binary.BigEndian.AppendUint32(nil, *mark))
	}
	attr(4, make([]byte, 16)) // NFQA_TIMESTAMP, which the gate skips
	if payload != nil {
		attr(nfqaPayload, payload)
	}
	m := make([]byte, nlmsgHeaderLen+nfgenLen, nlmsgHeaderLen+nfgenLen+len(attrs))
	putHeader(m, len(m)+len(attrs), nfqnlMsgPacket, 0, 0, 0)
	return append(m, attrs...)
}

func TestServe(t *testing.T) {
	type observed struct {
		p verdict.Packet
		d verdict.Decision
	}
	var obs []observed
	cfg := Config{Observe: func(p verdict.Packet, d verdict.Decision, _ time.Duration) { obs = append(obs, observed{p, d}) }}
	dec := &portDecider{accept: 8080, seen: []verdict.Packet{}}
	q, k := testQueue(t, cfg, dec)

	accept := ipv4(6, src4, dst4, nil, tcp(40000, 8080, verdict.FlagSYN, nil, nil))
	drop := ipv6(6, src6, dst6, tcp(40000, 8081, verdict.FlagSYN, nil, nil))
	garbage := []byte{0x45, 0, 0}
	var dgram []byte
	for i, b := range [][]byte{accept, drop, garbage} {
		id := uint32(100 + i)
		k.waiting = append(k.waiting, id)
		dgram = append(dgram, packetMessage(id, nil, b)...)
	}
	noID := packetMessage(1, nil, accept)
	noID = append(noID[:nlmsgHeaderLen+nfgenLen:nlmsgHeaderLen+nfgenLen], noID[nlmsgHeaderLen+nfgenLen+12:]...)
	native.PutUint32(noID[0:4], uint32(len(noID)))
	dgram = append(dgram, noID...)
	q.consume(dgram, 0, false)
	if len(obs) != 0 {
		t.Error("observer ran before the verdicts were sent")
	}
	q.flush()

	want := []sentVerdict{{100, nfAccept, 0, false}, {101, nfDrop, 0, false}, {102, nfDrop, 0, false}}
	if got := k.sent(100, 101, 102); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("verdicts %v, want %v", got, want)
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
	wantStats := Stats{Packets: 3, Accepted: 1, Dropped: 2, Malformed: 1, ReadErrors: 1, Sends: 1}
	if got := q.Stats(); got != wantStats {
		t.Errorf("Stats = %+v, want %+v", got, wantStats)
	}
}

// TestFlushBatches checks which packets share a batch verdict: runs of one
// verdict over consecutive ids, none marked; and that the kernel model ends
// with every packet settled as decided.
func TestFlushBatches(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ids    []uint32
		ports  []uint16 // 8080 is accepted
		marked bool
		msgs   int
		batch  int
	}{
		{"one", []uint32{1}, []uint16{8080}, false, 1, 0},
		{"run of accepts", []uint32{1, 2, 3, 4}, []uint16{8080, 8080, 8080, 8080}, false, 1, 1},
		{"accept drop accept", []uint32{1, 2, 3}, []uint16{8080, 1, 8080}, false, 3, 0},
		{"two runs", []uint32{5, 6, 7, 8}, []uint16{8080, 8080, 1, 1}, false, 2, 2},
		{"gap in ids", []uint32{5, 6, 9, 10}, []uint16{8080, 8080, 8080, 8080}, false, 2, 2},
		{"id wraps", []uint32{0xffffffff, 0, 1}, []uint16{1, 1, 1}, false, 1, 1},
		{"marked accepts stay single", []uint32{1, 2, 3}, []uint16{8080, 8080, 1}, true, 3, 0},
		{"marked: drops batch", []uint32{1, 2, 3}, []uint16{1, 1, 8080}, true, 2, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{}
			if tc.marked {
				cfg.AcceptMark, cfg.AcceptMask = 0x10000, 0xf0000
			}
			q, k := testQueue(t, cfg, &portDecider{accept: 8080})
			var msgs []verdictMsg
			q.send = func(b []byte) error {
				msgs = decodeVerdicts(t, b, 0)
				k.apply(msgs)
				return nil
			}
			var want []sentVerdict
			for i, id := range tc.ids {
				k.serve(q, id, 0, ipv4(6, src4, dst4, nil, tcp(40000, tc.ports[i], verdict.FlagSYN, nil, nil)))
				w := sentVerdict{id, nfDrop, 0, false}
				if tc.ports[i] == 8080 {
					w.v = nfAccept
					if tc.marked {
						w.mark, w.setMark = 0x10000, true
					}
				}
				want = append(want, w)
			}
			q.flush()
			if len(msgs) != tc.msgs {
				t.Errorf("%d verdict messages %+v, want %d", len(msgs), msgs, tc.msgs)
			}
			batches := 0
			for _, m := range msgs {
				if m.batch {
					batches++
				}
			}
			if batches != tc.batch {
				t.Errorf("%d batch verdicts in %+v, want %d", batches, msgs, tc.batch)
			}
			if got := k.sent(tc.ids...); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("verdicts %v, want %v", got, want)
			}
		})
	}
}

// TestStatsCountBeforeVerdict: a caller that sees its packet pass or vanish
// and then reads Stats finds it counted, because the counters move before
// the verdicts are sent.
func TestStatsCountBeforeVerdict(t *testing.T) {
	q, k := testQueue(t, Config{}, &portDecider{accept: 8080})
	var atSend []Stats
	q.send = func(b []byte) error {
		atSend = append(atSend, q.Stats())
		k.apply(decodeVerdicts(t, b, 0))
		return nil
	}
	k.serve(q, 1, 0, ipv4(6, src4, dst4, nil, tcp(40000, 8080, verdict.FlagSYN, nil, nil)))
	k.serve(q, 2, 0, ipv4(6, src4, dst4, nil, tcp(40000, 1, verdict.FlagSYN, nil, nil)))
	k.serve(q, 3, 0, []byte{0x45})
	q.flush()
	k.sent(1, 2, 3)
	want := Stats{Packets: 3, Accepted: 1, Dropped: 2, Malformed: 1, Sends: 1}
	if len(atSend) != 1 || atSend[0] != want {
		t.Errorf("Stats while the verdicts were sent: %+v, want [%+v]", atSend, want)
	}
}

// TestServeFullBatch serves more packets than a batch holds: the batch is
// sent when full, so every packet still gets its verdict.
func TestServeFullBatch(t *testing.T) {
	q, k := testQueue(t, Config{}, &portDecider{accept: 8080})
	var ids []uint32
	for i := range 3*maxBatch + 5 {
		id := uint32(i + 1)
		ids = append(ids, id)
		port := uint16(8080)
		if i%7 == 0 {
			port = 1
		}
		k.serve(q, id, 0, ipv4(6, src4, dst4, nil, tcp(40000, port, verdict.FlagSYN, nil, nil)))
	}
	q.flush()
	if got := k.sent(ids...); len(got) != len(ids) {
		t.Errorf("%d verdicts for %d packets", len(got), len(ids))
	}
	if st := q.Stats(); st.Sends != 4 {
		t.Errorf("%d sends for %d packets in batches of %d, want 4", st.Sends, len(ids), maxBatch)
	}
}

func TestServeVerdictError(t *testing.T) {
	q, _ := testQueue(t, Config{}, &portDecider{accept: 1})
	q.send = func([]byte) error { return errors.New("sendmsg: no buffer space") }
	b := ipv4(17, src4, dst4, nil, udp(1, 2, nil))
	q.serve(1, 0, b)
	q.serve(2, 0, b)
	q.flush()
	if got := q.Stats().VerdictErrors; got != 2 {
		t.Errorf("VerdictErrors = %d, want 2", got)
	}
}

// TestConsumeErrors covers what else the kernel sends on the socket: the
// bind's acknowledgement or refusal, refused verdicts, and messages from a
// port other than the kernel's.
func TestConsumeErrors(t *testing.T) {
	q, _ := testQueue(t, Config{}, &portDecider{})
	q.bindSeq = 77
	errMsg := func(errno int32, seq uint32) []byte {
		m := make([]byte, nlmsgHeaderLen+4+nlmsgHeaderLen)
		native.PutUint32(m[0:4], uint32(len(m)))
		native.PutUint16(m[4:6], nlmsgError)
		native.PutUint32(m[8:12], seq)
		native.PutUint32(m[16:20], uint32(errno))
		native.PutUint32(m[20:24], nlmsgHeaderLen)
		native.PutUint32(m[28:32], seq)
		return m
	}
	q.consume(errMsg(-int32(syscall.ENOENT), 0), 0, false)
	if st := q.Stats(); st.VerdictErrors != 1 {
		t.Errorf("a refused verdict is not counted: %+v", st)
	}
	q.consume(errMsg(-int32(syscall.EBUSY), 77), 0, false)
	if !errors.Is(q.bindErr, syscall.EBUSY) || q.bound {
		t.Errorf("bind refusal: bound %v, err %v", q.bound, q.bindErr)
	}
	q.bindErr = nil
	q.consume(errMsg(0, 77), 0, false)
	if !q.bound || q.bindErr != nil {
		t.Errorf("bind acknowledged: bound %v, err %v", q.bound, q.bindErr)
	}
	q.consume(packetMessage(5, nil, good("ipv4 tcp syn")), 1234, false)
	q.consume([]byte{1, 2, 3}, 0, false)
	if st := q.Stats(); st.Packets != 0 || st.ReadErrors != 2 {
		t.Errorf("a message from a user port or a runt was served: %+v", st)
	}
}

// A datagram cut short still yields its packet id, and the packet is
// dropped as malformed rather than left waiting in the kernel.
func TestConsumeTruncated(t *testing.T) {
	q, k := testQueue(t, Config{}, &portDecider{accept: 8080})
	m := packetMessage(9, nil, good("ipv4 tcp syn"))
	k.waiting = []uint32{9}
	q.consume(m[:40], 0, true)
	q.flush()
	if got := k.sent(9); len(got) != 1 || got[0].v != nfDrop {
		t.Errorf("truncated packet got %+v, want a drop", got)
	}
	if st := q.Stats(); st.Malformed != 1 {
		t.Errorf("Stats = %+v, want 1 malformed", st)
	}
}

// TestServeAllocs proves our part of the per-packet path allocates nothing:
// reading the netlink message, parse, decide, mark, building the verdicts,
// and the observer, for good and malformed packets.
func TestServeAllocs(t *testing.T) {
	n := 0
	cfg := Config{
		Observe:    func(verdict.Packet, verdict.Decision, time.Duration) { n++ },
		AcceptMark: 0x4b470000, AcceptMask: 0xffff0000,
	}
	q, _ := testQueue(t, cfg, &portDecider{accept: 8080})
	q.send = func([]byte) error { return nil }
	mark := uint32(5)
	var dgrams [][]byte
	for _, b := range [][]byte{
		good("ipv4 tcp syn"),
		good("ipv6 udp"),
		bad("ipv4 tcp data offset 4"),
	} {
		dgrams = append(dgrams, packetMessage(7, &mark, b))
	}
	if a := testing.AllocsPerRun(1000, func() {
		for range maxBatch / 4 {
			for _, d := range dgrams {
				q.consume(d, 0, false)
			}
		}
		q.flush()
	}); a != 0 && !raceEnabled {
		t.Errorf("%v allocations per batch, want 0", a)
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
	q, k := testQueue(t, Config{AcceptMark: 0x4b470000, AcceptMask: 0xffff0000}, &portDecider{accept: 8080})
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
		k.waiting = append(k.waiting, id)
		q.consume(packetMessage(id, in.mark, in.b), 0, false)
	}
	q.flush()
	want := []sentVerdict{
		{1, nfAccept, 0x4b470000, true},
		{2, nfAccept, 0x4b470005, true},
		{3, nfDrop, 0, false},
		{4, nfDrop, 0, false},
	}
	if got := k.sent(1, 2, 3, 4); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("verdicts %v, want %v", got, want)
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
	if _, err := Open(Config{Queue: 3, CopyRange: 70000}); err == nil || !strings.Contains(err.Error(), "above the 65535") {
		t.Errorf("Open accepted a copy range the kernel cannot copy: %v", err)
	}
}

// TestRunRefuses: Run needs a decider, and a Queue that is closed never
// binds. Opening the socket needs no privilege; binding would.
func TestRunRefuses(t *testing.T) {
	q, err := Open(Config{Queue: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Run(context.Background(), nil); err == nil {
		t.Error("Run accepted a nil decider")
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q.Run(context.Background(), &portDecider{}); err == nil || !strings.Contains(err.Error(), "closed or already running") {
		t.Errorf("Run after Close: %v, want it refused before touching the socket", err)
	}
}

func BenchmarkServe(b *testing.B) {
	q, err := newQueue(Config{})
	if err != nil {
		b.Fatal(err)
	}
	q.send = func([]byte) error { return nil }
	q.decider = &portDecider{accept: 8080}
	m := packetMessage(1, nil, good("ipv4 tcp syn"))
	b.ReportAllocs()
	for b.Loop() {
		q.consume(m, 0, false)
		q.flush()
	}
}

// BenchmarkServeBatch serves full batches, as under load: 64 packets read,
// then their verdicts built and sent at once. ns/op is per packet.
func BenchmarkServeBatch(b *testing.B) {
	q, err := newQueue(Config{})
	if err != nil {
		b.Fatal(err)
	}
	q.send = func([]byte) error { return nil }
	q.decider = &portDecider{accept: 8080}
	var msgs [maxBatch][]byte
	for i := range msgs {
		msgs[i] = packetMessage(uint32(i+1), nil, good("ipv4 tcp syn"))
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		q.consume(msgs[i%maxBatch], 0, false)
		if i%maxBatch == maxBatch-1 {
			q.flush()
		}
	}
}
