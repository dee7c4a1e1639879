package verdict

// GrantedBySPA reports whether p, a packet that opened door d (a decision
// with ReasonOpened for d), was an SPA packet rather than the last knock of
// d's sequence: it came to d's SPA port, which no knock sequence may use.
// An SPA grant covers the ports the packet asked for, not all of d.Open,
// and may be shorter than d.OpenFor.
func (d *Door) GrantedBySPA(p Packet) bool {
	return d.SPA != nil && p.Proto == d.SPA.Port.Proto && p.DstPort == d.SPA.Port.Num
}
