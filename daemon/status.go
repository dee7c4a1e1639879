package daemon

import (
	"cmp"
	"sort"
	"time"
)

// Status reports the live grants per door, the engine's table sizes and
// the queues' counters.
func (d *Daemon) Status() *StatusReport {
	now := time.Now()
	pol := d.gen.Load().pol
	st := d.eng.Stats()
	r := &StatusReport{
		Version: d.version, Policy: d.path, Now: now,
		TrackedSources: st.Sources, MaxSources: st.MaxSources,
		Grants: st.Grants, MaxGrants: st.MaxGrants, Evictions: st.Evictions,
	}
	r.Node = d.node
	r.Doors = []DoorStatus{}
	r.StateFile = StateFileStatus{Path: pol.StateFile, SaveFailures: d.state.failures.Load(), LastError: d.saveFailing()}
	r.HeldClosed = []string{}
	for _, p := range d.eng.HeldClosed() {
		r.HeldClosed = append(r.HeldClosed, p.String())
	}
	r.Health = "ok"
	if why := d.degraded(); why != "" {
		r.Health, r.Degraded = "degraded", why
	}
	byDoor := map[string][]GrantStatus{}
	origins := d.grantOrigins(now)
	for _, g := range d.eng.Grants(now) {
		ports := g.Ports
		if ports == nil {
			if door, ok := doorNamed(pol.Policy, g.Door); ok {
				ports = door.Open
			}
		}
		gs := GrantStatus{
			Source: g.Source, Opened: g.Opened.Round(0), Until: g.Until.Round(0), LeftSeconds: g.Until.Sub(now).Seconds(),
			Ports: []string{}, ConnsLeft: g.ConnsLeft, Origin: cmp.Or(origins[grantID{g.Door, g.Source}], d.node),
		}
		for _, p := range ports {
			gs.Ports = append(gs.Ports, p.String())
		}
		byDoor[g.Door] = append(byDoor[g.Door], gs)
	}
	r.Cluster = d.clusterStatus()
	d.inspect(r, pol.Doors, now)
	for _, door := range pol.Doors {
		gs := byDoor[door.Name]
		if gs == nil {
			gs = []GrantStatus{}
		}
		sort.Slice(gs, func(i, j int) bool { return gs[i].Source.Less(gs[j].Source) })
		r.Doors = append(r.Doors, DoorStatus{Name: door.Name, Grants: gs})
	}
	if len(d.qs) > 0 {
		r.Queue = QueueSnapshot{Queue: pol.Queue, Queues: len(d.qs)}
		for _, q := range d.qs {
			qs := q.Stats()
			r.Queue.Packets += qs.Packets
			r.Queue.Accepted += qs.Accepted
			r.Queue.Dropped += qs.Dropped
			r.Queue.Malformed += qs.Malformed
			r.Queue.ENOBUFS += qs.ENOBUFS
		}
	}
	return r
}
