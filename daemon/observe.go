package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

func (d *Daemon) doorName(i int) string {
	doors := d.eng.Policy().Doors
	if i < 0 || i >= len(doors) {
		return ""
	}
	return doors[i].Name
}

// observe runs for every packet on the verdict path, after its verdict: it
// counts the decision and logs those that changed a grant (every knock at
// debug level), and wakes the state writer. It does nothing costly unless
// the decision changed a grant or debug logging is on.
func (d *Daemon) observe(p verdict.Packet, dec verdict.Decision, took time.Duration) {
	d.m.Observe(dec, took)
	if dec.GrantEnded {
		d.log.Info("grant used up", "door", d.doorName(dec.Door), "source", p.Src.String(), "by", "max_connections")
		d.markDirty()
	}
	if dec.Banned {
		d.log.Warn("source penalized: its knocks and SPA packets are ignored for a while", "source", p.Src.String(),
			"last", dec.Reason.String(), "ban", d.eng.Policy().Penalty.Ban.String())
	}
	switch dec.Reason {
	case verdict.ReasonKnockReplay:
		d.log.Warn("TOTP sequence replayed by another source", "door", d.doorName(dec.Door), "source", p.Src.String())
		return
	case verdict.ReasonOpened:
		pol := d.eng.Policy()
		if dec.Door < 0 || dec.Door >= len(pol.Doors) {
			return // a reload renumbered the doors in between
		}
		door := pol.Doors[dec.Door]
		by, ports := "knock", fmt.Sprint(door.Open)
		if door.SPA != nil && p.Proto == door.SPA.Port.Proto && p.DstPort == door.SPA.Port.Num {
			// An SPA grant covers the ports the packet asked for, and a
			// client timeout may shorten it; status shows the details.
			by, ports = "spa", "as requested"
		}
		d.log.Info("grant opened", "door", door.Name, "source", p.Src.String(), "by", by,
			"open_for", door.OpenFor.String(), "ports", ports)
		d.markDirty()
		return
	case verdict.ReasonClosed:
		d.log.Info("grant revoked", "door", d.doorName(dec.Door), "source", p.Src.String(), "by", "close_sequence")
		d.markDirty()
		return
	case verdict.ReasonSPAStale, verdict.ReasonSPASource, verdict.ReasonSPAPorts, verdict.ReasonSPACommand:
		// An authenticated packet that was refused: it is in the replay
		// cache now, which the state file must keep; and an operator
		// wants to know that a key holder was turned away.
		d.log.Warn("SPA packet refused", "door", d.doorName(dec.Door), "source", p.Src.String(), "reason", dec.Reason.String())
		d.markDirty()
		return
	}
	if !d.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	if dec.Reset != verdict.NoDoor {
		d.log.Debug("knock sequence reset", "door", d.doorName(dec.Reset), "source", p.Src.String(),
			"packet", verdict.Port{Proto: p.Proto, Num: p.DstPort}.String())
	}
	switch dec.Reason {
	case verdict.ReasonSPAInvalid, verdict.ReasonSPAReplay, verdict.ReasonSPARateLimited:
		d.log.Debug("spa packet refused", "door", d.doorName(dec.Door), "source", p.Src.String(), "reason", dec.Reason.String())
	case verdict.ReasonKnock, verdict.ReasonNotAllowed, verdict.ReasonKnockRetransmit, verdict.ReasonKnockWrong:
		d.log.Debug("knock", "door", d.doorName(dec.Door), "source", p.Src.String(), "reason", dec.Reason.String(),
			"packet", verdict.Port{Proto: p.Proto, Num: p.DstPort}.String())
	}
}
