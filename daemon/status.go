package daemon

import (
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
	byDoor := map[string][]GrantStatus{}
	origins := d.grantOrigins(now)
	for _, g := range d.eng.Grants(now) {
		byDoor[g.Door] = append(byDoor[g.Door], GrantStatus{
			Source: g.Source, Opened: g.Opened.Round(0), Until: g.Until.Round(0), LeftSeconds: g.Until.Sub(now).Seconds(),
			Origin: origins[grantID{g.Door, g.Source}],
		})
	}
	r.Cluster = d.clusterStatus()
	for _, door := range pol.Doors {
		gs := byDoor[door.Name]
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
