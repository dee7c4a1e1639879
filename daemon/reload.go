package daemon

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/knockgate/knockgate/rules"
)

// Reload re-reads the policy file and swaps the new policy in, keeping the
// grants and knocks in progress of doors that remain. An invalid policy is
// refused and the running one stays; the error carries the diagnostics. by
// says who asked, for the log.
func (d *Daemon) Reload(by string) (*ReloadOutcome, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	now := time.Now()
	fail := func(err error) (*ReloadOutcome, error) {
		d.log.Error("policy reload refused; the running policy stays", "by", by, "policy", d.path, "err", err.Error())
		d.m.Reloaded(false, now)
		return nil, err
	}
	pol, err := rules.Load(d.path)
	if err != nil {
		return fail(err)
	}
	// A policy with no door is valid but, loaded by mistake (an empty or
	// truncated file), it would drop every knock; refused here, it leaves
	// the running policy in force. At start it is only warned about.
	for _, w := range pol.Warnings() {
		if errors.Is(w, rules.ErrNoDoor) {
			return fail(fmt.Errorf("%w; a reload to a policy without a door is refused (restart knockgate to run one)", w))
		}
	}
	running := d.gen.Load().pol
	if pol.StateFile != running.StateFile {
		// The new state file is locked before anything changes: another
		// daemon's is refused with the reload.
		if err := d.switchState(pol.StateFile, pol.ProtectedFiles()); err != nil {
			return fail(err)
		}
	}
	d.keepCluster(pol, running)
	ended, err := d.eng.Reload(pol.Policy, now)
	if err != nil {
		if pol.StateFile != running.StateFile {
			if serr := d.switchState(running.StateFile, running.ProtectedFiles()); serr != nil {
				d.log.Error("failed to take back the running policy's state file", "err", serr)
			}
		}
		return fail(fmt.Errorf("failed to compile policy %s: %w", d.path, err))
	}
	for _, w := range pol.Warnings() {
		d.log.Warn("policy warning", "by", by, "warning", w.Error())
	}
	restartOnly := rules.RestartOnlyChanges(running, pol)
	for _, what := range restartOnly {
		d.log.Warn("a changed setting takes effect at the next restart", "setting", what)
	}
	// The queue and the sockets stay bound as they are; the state file
	// can follow at once.
	pol.KeepRestartOnly(running)
	d.gen.Store(&generation{pol: pol})
	out := &ReloadOutcome{Doors: len(pol.Doors), RestartOnly: restartOnly}
	for _, g := range ended {
		d.log.Info("grant ended", "door", g.Door, "source", g.Source.String(), "by", "reload removed the door")
		out.Ended = append(out.Ended, g.Door+" "+g.Source.String())
	}
	// Ports the running policy protected and the new one does not stay
	// closed until a restart (the engine holds them): a reload never opens
	// a port to everyone. The operator is told which.
	for _, p := range d.eng.HeldClosed() {
		out.HeldClosed = append(out.HeldClosed, p.String())
	}
	if len(out.HeldClosed) > 0 {
		d.log.Warn("ports the new policy no longer protects stay closed until restart", "ports", strings.Join(out.HeldClosed, ","))
	}
	d.m.SetDoors(doorNames(pol.Policy))
	d.m.Reloaded(true, now)
	d.clusterReloaded()
	d.log.Info("policy reloaded", "by", by, "policy", d.path, "doors", len(pol.Doors), "grants_ended", len(ended))
	d.markUrgent() // grants of removed doors ended, connection counts may have shrunk
	return out, nil
}
