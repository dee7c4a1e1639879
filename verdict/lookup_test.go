package verdict

import "testing"

func TestNewEngineRefusesAmbiguousPolicies(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Policy)
	}{
		{"duplicate door", func(p *Policy) { p.Doors = append(p.Doors, p.Doors[0]) }},
		{"shared first knock", func(p *Policy) { p.Doors[1].Sequence = ports("tcp/7000", "tcp/7001") }},
		{"close starts like open", func(p *Policy) { p.Doors[0].CloseSequence = ports("tcp/7000") }},
		{"knock is protected", func(p *Policy) { p.Doors[1].Open = ports("udp/8000") }},
		{"empty sequence", func(p *Policy) { p.Doors[0].Sequence = nil }},
		{"empty open", func(p *Policy) { p.Doors[0].Open = nil }},
		{"zero open_for", func(p *Policy) { p.Doors[0].OpenFor = 0 }},
		{"zero sequence_timeout", func(p *Policy) { p.Doors[0].SequenceTimeout = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPolicy()
			tt.mod(&p)
			if _, err := NewEngine(p, t0); err == nil {
				t.Fatal("NewEngine accepted the policy")
			}
		})
	}
}
