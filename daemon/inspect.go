package daemon

import (
	"net/netip"
	"sort"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// The parts of the status report beyond grants: the penalty box and the
// knocks in progress, read from the engine (verdict.Engine.Bans,
// Progress), and the Unban an operator asks for.

// BanStatus is a source in the penalty box.
type BanStatus struct {
	Source      netip.Addr `json:"source"`
	Until       time.Time  `json:"until"`
	LeftSeconds float64    `json:"left_seconds"`
}

// KnockCount is how many sources have a knock sequence of Door in
// progress.
type KnockCount struct {
	Door    string `json:"door"`
	Sources int    `json:"sources"`
}

// ProgressStatus is one source's knock sequence in progress: Step knocks
// of Of matched (Of is 0 for a TOTP door).
type ProgressStatus struct {
	Door    string     `json:"door"`
	Source  netip.Addr `json:"source"`
	Close   bool       `json:"close,omitempty"`
	Step    int        `json:"step"`
	Of      int        `json:"of"`
	Started time.Time  `json:"started"`
}

// maxListed bounds the bans and knocks in progress a status report lists
// one by one: under a flood the tables hold a hundred thousand sources,
// which would make a report of megabytes that no operator reads.
const maxListed = 1000

// inspect fills r's bans, knock counts (one per door of doors, in policy
// order) and progress, sorted by source.
func (d *Daemon) inspect(r *StatusReport, doors []verdict.Door, now time.Time) {
	r.Bans = []BanStatus{}
	for _, b := range d.eng.Bans(now) {
		r.Bans = append(r.Bans, BanStatus{Source: b.Source, Until: b.Until.Round(0), LeftSeconds: b.Until.Sub(now).Seconds()})
	}
	sort.Slice(r.Bans, func(i, j int) bool { return r.Bans[i].Source.Less(r.Bans[j].Source) })
	count := map[string]int{}
	r.Progress = []ProgressStatus{}
	for _, p := range d.eng.Progress(now) {
		count[p.Door]++
		r.Progress = append(r.Progress, ProgressStatus{Door: p.Door, Source: p.Source, Close: p.Close, Step: p.Step, Of: p.Of, Started: p.Started.Round(0)})
	}
	sort.Slice(r.Progress, func(i, j int) bool {
		a, b := r.Progress[i], r.Progress[j]
		if a.Door != b.Door {
			return a.Door < b.Door
		}
		return a.Source.Less(b.Source)
	})
	if n := len(r.Bans); n > maxListed {
		r.Bans, r.BansOmitted = r.Bans[:maxListed], n-maxListed
	}
	if n := len(r.Progress); n > maxListed {
		r.Progress, r.ProgressOmitted = r.Progress[:maxListed], n-maxListed
	}
	r.Knocks = []KnockCount{}
	for _, door := range doors {
		r.Knocks = append(r.Knocks, KnockCount{Door: door.Name, Sources: count[door.Name]})
	}
}

// Unban lifts source's ban, as knockgate unban asks; it reports whether
// the source was banned.
func (d *Daemon) Unban(src netip.Addr) bool {
	banned := d.eng.Unban(src, time.Now())
	if banned {
		d.log.Info("ban lifted", "source", src.String(), "by", "control socket")
	}
	return banned
}
