package verdict

// SPACopyRange is how many bytes of each packet Decide needs once a door
// reads SPA payloads: whole datagrams, since fwknop payloads run to several
// hundred bytes and stay well under a 1500-byte MTU.
const SPACopyRange = 2048

// CopyRange is how much of each packet the engine needs from the kernel
// (NFQUEUE's copy range): SPACopyRange when a door has an spa block, else
// 0, which means the headers alone (the gate's default). The queue fixes
// it when it binds, so a reload that adds the first SPA door takes effect
// at the next restart.
func (p Policy) CopyRange() uint32 {
	for _, d := range p.Doors {
		if d.SPA != nil {
			return SPACopyRange
		}
	}
	return 0
}
