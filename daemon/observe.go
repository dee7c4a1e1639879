package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// observe runs for every packet on the verdict path, after its verdict: it
// counts the decision and logs those that changed a grant (every knock at
// debug level), and wakes the state writer. It does nothing costly unless
// the decision changed a grant or debug logging is on.
//
// Doors are named by the decision (DoorName, ResetName), never by its
// index: a reload may have renumbered the doors since the packet was
// decided.
func (d *Daemon) observe(p verdict.Packet, dec verdict.Decision, took time.Duration) {
	d.m.Observe(dec, took)
	if dec.GrantEnded {
		d.log.Info("grant used up", "door", dec.DoorName, "source", p.Src.String(), "by", "max_connections")
		d.markDirty()
	}
	if dec.Banned {
		d.log.Warn("source penalized: its knocks and SPA packets are ignored for a while", "source", p.Src.String(),
			"last", dec.Reason.String(), "ban", d.gen.Load().pol.Penalty.Ban.String())
	}
	switch dec.Reason {
	case verdict.ReasonKnockReplay:
		d.log.Warn("TOTP sequence replayed by another source", "door", dec.DoorName, "source", p.Src.String())
		return
	case verdict.ReasonOpened:
		// The door's settings come from the engine's policy, which is
		// never older than the decision: the daemon's generation follows
		// the engine's a moment later in a reload, and a door the reload
		// added would not be in it yet.
		door, ok := doorNamed(d.eng.Policy(), dec.DoorName)
		if !ok {
			return // a reload removed the door in between
		}
		by, ports := "knock", fmt.Sprint(door.Open)
		if door.GrantedBySPA(p) {
			// An SPA grant covers the ports the packet asked for, and a
			// client timeout may shorten it; status shows the details.
			by, ports = "spa", "as requested"
		}
		d.log.Info("grant opened", "door", door.Name, "source", p.Src.String(), "by", by,
			"open_for", door.OpenFor.String(), "ports", ports)
		d.markDirty()
		return
	case verdict.ReasonClosed:
		d.log.Info("grant revoked", "door", dec.DoorName, "source", p.Src.String(), "by", "close_sequence")
		d.markDirty()
		return
	case verdict.ReasonSPAStale, verdict.ReasonSPASource, verdict.ReasonSPAPorts, verdict.ReasonSPACommand:
		// An authenticated packet that was refused: it is in the replay
		// cache now, which the state file must keep; and an operator
		// wants to know that a key holder was turned away.
		d.log.Warn("SPA packet refused", "door", dec.DoorName, "source", p.Src.String(), "reason", dec.Reason.String())
		d.markDirty()
		return
	}
	if !d.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	if dec.Reset != verdict.NoDoor {
		d.log.Debug("knock sequence reset", "door", dec.ResetName, "source", p.Src.String(),
			"packet", verdict.Port{Proto: p.Proto, Num: p.DstPort}.String())
	}
	switch dec.Reason {
	case verdict.ReasonSPAInvalid, verdict.ReasonSPAReplay, verdict.ReasonSPARateLimited:
		d.log.Debug("spa packet refused", "door", dec.DoorName, "source", p.Src.String(), "reason", dec.Reason.String())
	case verdict.ReasonKnock, verdict.ReasonNotAllowed, verdict.ReasonKnockRetransmit, verdict.ReasonKnockWrong:
		d.log.Debug("knock", "door", dec.DoorName, "source", p.Src.String(), "reason", dec.Reason.String(),
			"packet", verdict.Port{Proto: p.Proto, Num: p.DstPort}.String())
	}
}

func doorNamed(p verdict.Policy, name string) (verdict.Door, bool) {
	for _, d := range p.Doors {
		if d.Name == name {
			return d, true
		}
	}
	return verdict.Door{}, false
}
