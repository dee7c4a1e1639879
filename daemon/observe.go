package daemon

import (
	"context"
	"log/slog"
	"strings"
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
		d.markUrgent()
	} else if dec.Reason == verdict.ReasonGranted && d.limitsConnections(dec) {
		// The grant has a connection fewer left, which the state file
		// must keep: a kill -9 would otherwise give it back.
		d.markUrgent()
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
		d.logOpened(p, door)
		if door.GrantedBySPA(p) {
			// Its packet is in the replay cache, which must be on disk
			// before a crash could let the packet open again.
			d.markUrgent()
		} else {
			d.markDirty()
		}
		return
	case verdict.ReasonClosed:
		d.log.Info("grant revoked", "door", dec.DoorName, "source", p.Src.String(), "by", "close_sequence")
		d.markUrgent()
		return
	case verdict.ReasonSPAStale, verdict.ReasonSPASource, verdict.ReasonSPAPorts, verdict.ReasonSPACommand:
		// An authenticated packet that was refused: it is in the replay
		// cache now, which the state file must keep; and an operator
		// wants to know that a key holder was turned away.
		d.log.Warn("SPA packet refused", "door", dec.DoorName, "source", p.Src.String(), "reason", dec.Reason.String())
		d.markUrgent()
		return
	}
	d.logFailure(p, dec)
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

// limitsConnections reports whether the door that decided has
// max_connections. It runs for each connection a grant admits, on the
// verdict path, so it looks the door up by the decision's index, one
// compare, and walks the doors by name only when a reload renumbered them
// in between.
func (d *Daemon) limitsConnections(dec verdict.Decision) bool {
	doors := d.eng.Policy().Doors
	if i := dec.Door; i >= 0 && i < len(doors) && doors[i].Name == dec.DoorName {
		return doors[i].MaxConnections > 0
	}
	for i := range doors {
		if doors[i].Name == dec.DoorName {
			return doors[i].MaxConnections > 0
		}
	}
	return false
}

// logOpened logs a grant just opened with what it actually allows: an SPA
// grant covers the ports its packet asked for, for as long as it asked
// (up to the door's max_open_for), so the line reads them from the
// engine's grant rather than from the door. Grants open rarely; the
// lookup is off the path of every other packet.
func (d *Daemon) logOpened(p verdict.Packet, door verdict.Door) {
	by := "knock"
	if door.GrantedBySPA(p) {
		by = "spa"
	}
	g, ok := d.eng.GrantOf(door.Name, p.Src, time.Now())
	if !ok {
		// Not under the sender's address: an SPA packet of a door with
		// allow_any_source that asked for another address, or a grant
		// already ended (a revoke, a reload) between decision and log.
		d.log.Info("grant opened", "door", door.Name, "source", p.Src.String(), "by", by,
			"granted_to", "the address the packet asked for")
		return
	}
	ports := g.Ports
	if ports == nil {
		ports = door.Open
	}
	attrs := []any{"door", door.Name, "source", p.Src.String(), "by", by, "ports", portList(ports),
		"open_for", g.Until.Sub(g.Opened).Round(time.Second).String(), "until", g.Until.Format(time.RFC3339)}
	if g.ConnsLeft > 0 {
		attrs = append(attrs, "connections", g.ConnsLeft)
	}
	d.log.Info("grant opened", attrs...)
}

// portList prints ports as the policy writes them, comma-separated:
// "tcp/22,tcp/445".
func portList(ps []verdict.Port) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.String())
	}
	return b.String()
}
