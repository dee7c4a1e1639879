package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// normalise puts times in UTC and empty slices to nil, as DecodeMessage
// returns them, so messages compare with reflect.DeepEqual.
func normalise(m Message) Message {
	m.Sent = m.Sent.UTC()
	u := &m.Update
	for i := range u.Grants {
		u.Grants[i].Opened, u.Grants[i].Until = u.Grants[i].Opened.UTC(), u.Grants[i].Until.UTC()
		if len(u.Grants[i].Ports) == 0 {
			u.Grants[i].Ports = nil
		}
	}
	for i := range u.Revokes {
		u.Revokes[i].At, u.Revokes[i].Until = u.Revokes[i].At.UTC(), u.Revokes[i].Until.UTC()
	}
	for i := range u.Replays {
		u.Replays[i].Until = u.Replays[i].Until.UTC()
	}
	for i := range u.TOTP {
		u.TOTP[i].Until = u.TOTP[i].Until.UTC()
	}
	for i := range u.Bans {
		u.Bans[i].Until = u.Bans[i].Until.UTC()
	}
	if len(u.Grants) == 0 {
		u.Grants = nil
	}
	if len(u.Revokes) == 0 {
		u.Revokes = nil
	}
	if len(u.Replays) == 0 {
		u.Replays = nil
	}
	if len(u.TOTP) == 0 {
		u.TOTP = nil
	}
	if len(u.Bans) == 0 {
		u.Bans = nil
	}
	return m
}

func TestCodecRoundTrip(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(7, 8))}
	for i := range 1000 {
		m := Message{Kind: Kind(1 + i%2), Sender: "gw1", Sent: g.at(-100, 100), Policy: PolicyHash{1, 2, 3}, Update: g.update()}
		b, err := AppendMessage(nil, &m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeMessage(b)
		if err != nil {
			t.Fatalf("#%d: %v", i, err)
		}
		if want := normalise(m); !reflect.DeepEqual(normalise(got), want) {
			t.Fatalf("#%d: round trip\n got %+v\nwant %+v", i, got, want)
		}
	}
}

func oneGrant() Message {
	return Message{Kind: KindUpdate, Sender: "gw1", Sent: t0, Update: Update{Grants: []Grant{{
		Door: "ssh", Source: netip.MustParseAddr("198.51.100.23"), Ports: []verdict.Port{ssh},
		Opened: t0.Add(-300 * time.Microsecond), Until: t0.Add(30 * time.Second), Origin: "gw1",
	}}}}
}

// TestBytesPerGrant records what one grant costs on the wire, before
// memberlist's own framing and encryption (about 45 bytes more).
func TestBytesPerGrant(t *testing.T) {
	m := oneGrant()
	one, err := AppendMessage(nil, &m)
	if err != nil {
		t.Fatal(err)
	}
	m.Update.Grants = append(m.Update.Grants, m.Update.Grants[0])
	m.Update.Grants[1].Source = netip.MustParseAddr("2001:db8::23")
	two, err := AppendMessage(nil, &m)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("one IPv4 grant message: %d bytes; an IPv6 grant more in the same message: %d bytes", len(one), len(two)-len(one))
	if len(one) > 80 {
		t.Errorf("one grant takes %d bytes, more than 80", len(one))
	}
}

func TestDecodeRefuses(t *testing.T) {
	m := oneGrant()
	good, err := AppendMessage(nil, &m)
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	bomb := mod(func(b []byte) []byte {
		// The grant count claims 2^60 grants.
		i := headerLen + len(m.Sender)
		return append(binary.AppendUvarint(b[:i], 1<<60), b[i+1:]...)
	})
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"bad magic", mod(func(b []byte) []byte { b[0] = 'X'; return b }), ErrMalformed},
		{"version", mod(func(b []byte) []byte { b[2] = 9; return b }), ErrVersion},
		{"kind", mod(func(b []byte) []byte { b[3] = 7; return b }), ErrMalformed},
		{"truncated", good[:len(good)-1], ErrMalformed},
		{"trailing", append(bytes.Clone(good), 0), ErrMalformed},
		{"count bomb", bomb, ErrMalformed},
		{"oversized update", append(bytes.Clone(good), make([]byte, MaxUpdateBytes)...), ErrTooLarge},
		{"empty sender", mod(func(b []byte) []byte { b[headerLen-1] = 0; return b }), ErrMalformed},
	}
	for _, c := range cases {
		if _, err := DecodeMessage(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
}

func TestEncodeRefuses(t *testing.T) {
	for name, f := range map[string]func(m *Message){
		"long door":      func(m *Message) { m.Update.Grants[0].Door = string(make([]byte, MaxName+1)) },
		"no origin":      func(m *Message) { m.Update.Grants[0].Origin = "" },
		"zoned address":  func(m *Message) { m.Update.Grants[0].Source = netip.MustParseAddr("fe80::1%eth0") },
		"invalid source": func(m *Message) { m.Update.Grants[0].Source = netip.Addr{} },
		"unsorted ports": func(m *Message) { m.Update.Grants[0].Ports = []verdict.Port{https, ssh} },
		"too many facts": func(m *Message) { m.Update.Bans = make([]Ban, MaxUpdateBytes/5) },
	} {
		m := oneGrant()
		f(&m)
		if name == "too many facts" {
			for i := range m.Update.Bans {
				m.Update.Bans[i] = Ban{Source: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), Until: t0}
			}
		}
		if _, err := AppendMessage(nil, &m); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
}

// FuzzDecodeMessage: no input panics, and whatever decodes encodes back to
// a message that decodes the same.
func FuzzDecodeMessage(f *testing.F) {
	g := gen{rand.New(rand.NewPCG(9, 10))}
	for i := range 20 {
		m := Message{Kind: Kind(1 + i%2), Sender: "gw2", Sent: t0, Update: g.update()}
		b, err := AppendMessage(nil, &m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("KG\x01\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			return
		}
		again, err := AppendMessage(nil, &m)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v\n%+v", err, m)
		}
		m2, err := DecodeMessage(again)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if !reflect.DeepEqual(normalise(m), normalise(m2)) {
			t.Fatalf("round trip differs:\n%+v\n%+v", m, m2)
		}
	})
}

func BenchmarkEncodeGrant(b *testing.B) {
	b.ReportAllocs()
	m := oneGrant()
	buf := make([]byte, 0, 256)
	for range b.N {
		buf, _ = AppendMessage(buf[:0], &m)
	}
}

func BenchmarkDecodeGrant(b *testing.B) {
	b.ReportAllocs()
	m := oneGrant()
	buf, _ := AppendMessage(nil, &m)
	for range b.N {
		if _, err := DecodeMessage(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFullState encodes the full state of 10,000 live grants, as a
// push/pull sends it, then decodes and merges it into an empty Store, as a
// gateway rejoining after a partition does; it reports the state's size.
func BenchmarkFullState(b *testing.B) {
	b.ReportAllocs()
	const n = 10_000
	s := NewStore()
	for i := range n {
		s.Merge(&Update{Grants: []Grant{{Door: "ssh", Source: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}),
			Opened: t0, Until: t0.Add(time.Hour), Origin: "gw1", Ports: []verdict.Port{ssh}}}}, t0)
	}
	var size int
	for range b.N {
		m := Message{Kind: KindState, Sender: "gw1", Sent: t0, Update: s.Snapshot(t0)}
		buf, err := AppendMessage(nil, &m)
		if err != nil {
			b.Fatal(err)
		}
		size = len(buf)
		got, err := DecodeMessage(buf)
		if err != nil {
			b.Fatal(err)
		}
		if NewStore().Merge(&got.Update, t0); len(got.Update.Grants) != n {
			b.Fatalf("%d grants", len(got.Update.Grants))
		}
	}
	b.ReportMetric(float64(size), "state-bytes")
	b.ReportMetric(float64(size)/n, "B/grant-on-wire")
}
