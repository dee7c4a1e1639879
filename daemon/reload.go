package daemon

import (
	"fmt"
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
	running := d.gen.Load().pol
	d.keepCluster(pol, running)
	ended, err := d.eng.Reload(pol.Policy, now)
	if err != nil {
		return fail(fmt.Errorf("failed to compile policy %s: %w", d.path, err))
	}
	for _, what := range rules.RestartOnlyChanges(running, pol) {
		d.log.Warn("a changed setting takes effect at the next restart", "setting", what)
	}
	// The queue and the sockets stay bound as they are; the state file
	// can follow at once.
	pol.KeepRestartOnly(running)
	d.gen.Store(&generation{pol: pol})
	out := &ReloadOutcome{Doors: len(pol.Doors)}
	for _, g := range ended {
		d.log.Info("grant ended", "door", g.Door, "source", g.Source.String(), "by", "reload removed the door")
		out.Ended = append(out.Ended, g.Door+" "+g.Source.String())
	}
	d.m.SetDoors(doorNames(pol.Policy))
	d.m.Reloaded(true, now)
	d.clusterReloaded()
	d.log.Info("policy reloaded", "by", by, "policy", d.path, "doors", len(pol.Doors), "grants_ended", len(ended))
	d.markDirty()
	return out, nil
}
