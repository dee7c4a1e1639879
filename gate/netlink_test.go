package gate

import (
	"encoding/binary"
	"testing"
)

// TestConfigMsg checks the bind request byte for byte where the kernel
// reads it (nfqnl_recv_config and its attribute policy).
func TestConfigMsg(t *testing.T) {
	b := configMsg(0x1234, 99, 256, 4096, nfqaCfgFFailOpen)
	if int(native.Uint32(b[0:4])) != len(b) || native.Uint16(b[4:6]) != nfqnlMsgConfig ||
		native.Uint16(b[6:8]) != nlmFRequest|nlmFAck || native.Uint32(b[8:12]) != 99 {
		t.Fatalf("bad nlmsghdr % x", b[:16])
	}
	if b[16] != 0 || b[17] != 0 || binary.BigEndian.Uint16(b[18:20]) != 0x1234 {
		t.Errorf("bad nfgenmsg % x", b[16:20])
	}
	want := map[uint16][]byte{
		nfqaCfgCmd:         {nfqnlCfgCmdBind, 0, 0, 0},
		nfqaCfgParams:      {0, 0, 1, 0, nfqnlCopyPacket},
		nfqaCfgQueueMaxLen: {0, 0, 0x10, 0},
		nfqaCfgMask:        {0, 0, 0, 1},
		nfqaCfgFlags:       {0, 0, 0, 1},
	}
	seen := 0
	for a := b[20:]; len(a) > 0; {
		n := int(native.Uint16(a[0:2]))
		typ := native.Uint16(a[2:4])
		if w, ok := want[typ]; !ok || string(a[4:n]) != string(w) {
			t.Errorf("attribute %d = % x, want % x", typ, a[4:n], w)
		}
		seen++
		a = a[nlAlign(n):]
	}
	if seen != len(want) {
		t.Errorf("%d attributes, want %d", seen, len(want))
	}
}

func TestAppendVerdict(t *testing.T) {
	b := appendVerdict(nil, 7, 0x01020304, nfAccept, 0xa0b0c0d0, true, false)
	b = appendVerdict(b, 7, 0x01020305, nfDrop, 0, false, true)
	if len(b) != markedMsgLen+verdictMsgLen {
		t.Fatalf("%d bytes, want %d", len(b), markedMsgLen+verdictMsgLen)
	}
	got := decodeVerdicts(t, b, 7)
	want := []verdictMsg{
		{id: 0x01020304, v: nfAccept, mark: 0xa0b0c0d0, setMark: true},
		{id: 0x01020305, v: nfDrop, batch: true},
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("decoded %+v, want %+v", got, want)
	}
	buf := make([]byte, 0, 2*markedMsgLen)
	if a := testing.AllocsPerRun(100, func() {
		buf = appendVerdict(buf[:0], 7, 1, nfAccept, 5, true, false)
		buf = appendVerdict(buf, 7, 2, nfAccept, 0, false, true)
	}); a != 0 && !raceEnabled {
		t.Errorf("%v allocations appending to a buffer with room, want 0", a)
	}
}

func TestParsePacketMsg(t *testing.T) {
	mark := uint32(0x42)
	payload := good("ipv4 tcp syn")
	_, body, rest, err := nextMessage(packetMessage(17, &mark, payload), false)
	if err != nil || rest != nil {
		t.Fatalf("nextMessage: %v, rest %d bytes", err, len(rest))
	}
	var m packetMsg
	if err := parsePacket(body, &m); err != nil {
		t.Fatal(err)
	}
	if m.id != 17 || m.mark != 0x42 || string(m.payload) != string(payload) {
		t.Errorf("parsed %+v", m)
	}
	// An attribute longer than what is left is refused, but an id already
	// read is kept so the packet still gets its verdict.
	msg := packetMessage(18, nil, payload)
	native.PutUint16(msg[len(msg)-len(payload)-4:], 0xfff0)
	_, body, _, _ = nextMessage(msg, false)
	if err := parsePacket(body, &m); err == nil || !m.hasID || m.id != 18 {
		t.Errorf("overlong attribute: err %v, %+v", err, m)
	}
}

// FuzzConsume feeds arbitrary bytes to the code that reads the socket, as
// if the kernel had sent them: nothing may panic, every packet served is in
// a verdict buffer, and no verdict names an id that was not served.
func FuzzConsume(f *testing.F) {
	mark := uint32(3)
	f.Add(packetMessage(1, nil, good("ipv4 tcp syn")), false)
	f.Add(append(packetMessage(1, &mark, good("ipv6 udp")), packetMessage(2, nil, []byte{0x45})...), false)
	f.Add(packetMessage(9, nil, good("ipv4 tcp syn"))[:30], true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, b []byte, truncated bool) {
		q, err := newQueue(Config{AcceptMark: 1, AcceptMask: 1})
		if err != nil {
			t.Fatal(err)
		}
		q.decider = &portDecider{accept: 8080}
		served := map[uint32]bool{}
		total := 0
		var msgs []verdictMsg
		q.send = func(out []byte) error {
			// The batch is still whole while its verdicts are sent.
			for _, id := range q.batch.id[:q.batch.n] {
				served[id] = true
			}
			total += q.batch.n
			msgs = append(msgs, decodeVerdicts(t, out, 0)...)
			return nil
		}
		q.consume(b, 0, truncated)
		q.flush()
		if st := q.Stats(); int(st.Packets) != total || st.Accepted+st.Dropped != st.Packets {
			t.Fatalf("stats %+v, %d packets sent verdicts", st, total)
		}
		if total > 0 && len(msgs) == 0 {
			t.Fatal("packets served, no verdict sent")
		}
		for _, m := range msgs {
			if !served[m.id] {
				t.Fatalf("verdict %+v for an id never served (%v)", m, served)
			}
		}
	})
}
