package verdict

import (
	"net/netip"
	"testing"
)

func TestGrantedBySPA(t *testing.T) {
	src := netip.MustParseAddr("198.51.100.7")
	both := Door{Name: "both", Sequence: []Port{{UDP, 7000}, {UDP, 7001}}, Open: []Port{{TCP, 22}},
		SPA: &SPA{Port: Port{UDP, 62201}}}
	knockOnly := Door{Name: "knock", Sequence: []Port{{UDP, 7000}, {UDP, 62201}}, Open: []Port{{TCP, 22}}}
	for _, tc := range []struct {
		door *Door
		p    Packet
		want bool
	}{
		{&both, Packet{Src: src, Proto: UDP, DstPort: 62201}, true},
		{&both, Packet{Src: src, Proto: UDP, DstPort: 7001}, false},
		{&both, Packet{Src: src, Proto: TCP, DstPort: 62201}, false},
		{&knockOnly, Packet{Src: src, Proto: UDP, DstPort: 62201}, false},
	} {
		if got := tc.door.GrantedBySPA(tc.p); got != tc.want {
			t.Errorf("door %s, packet %v/%d: GrantedBySPA = %v, want %v", tc.door.Name, tc.p.Proto, tc.p.DstPort, got, tc.want)
		}
	}
}
