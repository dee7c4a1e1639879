package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// trial is one measured trial of a row: a throughput, latency or drain
// result, or the error that stopped it.
type trial struct {
	T   tputResult
	L   latencyResult
	D   drainResult
	Err error
}

// row is every trial of one configuration across the rounds.
type row struct {
	Name   string
	Note   string
	Trials []trial
	// Extra figures (knockgate metrics after the flood).
	Extra map[string]float64
}

func (r *row) ok() []trial {
	var t []trial
	for _, x := range r.Trials {
		if x.Err == nil {
			t = append(t, x)
		}
	}
	return t
}

// mostlySaturated reports whether the kernel dropped at the queue in
// more than half of the row's good trials: the consumer, not the
// generator, set the rate. false for a missing row.
func (r *row) mostlySaturated() bool {
	if r == nil {
		return false
	}
	ok, sat := r.ok(), 0
	for _, t := range ok {
		if t.T.Saturated {
			sat++
		}
	}
	return sat*2 > len(ok)
}

func (r *row) firstErr() error {
	for _, x := range r.Trials {
		if x.Err != nil {
			return x.Err
		}
	}
	return nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r *row) med(f func(trial) float64) float64 {
	var v []float64
	for _, t := range r.ok() {
		v = append(v, f(t))
	}
	return median(v)
}

func rateOf(t trial) float64  { return t.T.Rate }
func lossOf(t trial) float64  { return t.T.Loss }
func genOf(t trial) float64   { return t.T.Gen.Rate }
func cpuOf(t trial) float64   { return t.T.CPUPerVerdict }
func p50Of(t trial) float64   { return t.L.P50 }
func p99Of(t trial) float64   { return t.L.P99 }
func drainOf(t trial) float64 { return t.D.Rate }

func msList(v []float64) string {
	var s []string
	for _, x := range v {
		s = append(s, fmt.Sprintf("%.1f", x*1e3))
	}
	return strings.Join(s, "/") + " ms"
}

// searchStep is one trial of the sustainable-rate search.
type searchStep struct {
	Target   int
	Achieved float64
	Loss     float64
	QDropped uint64
	UDropped uint64
	Pass     bool
	Err      error
}

type search struct {
	Name  string
	Flat  float64
	Best  float64 // highest rate that passed
	Steps []searchStep
}

// measure runs sections 2, 3 and 5 in the lab.
func measure(ctx context.Context, o options, b *bench, rep *report, step func(string, ...any)) {
	pinned := func(port int) genSpec {
		return genSpec{Dst: gwAddr4, Port: port, Count: 5_000_000, Max: o.window, CPUs: o.genCPU}
	}
	consumers := []consumer{refgo1, kg1}
	if b.refc != "" {
		consumers = []consumer{refgo1, kg1, refc1}
	}

	// 2. Flat-out throughput, alternating consumers each round.
	if !o.skipped("throughput") {
		var rows []*row
		for _, c := range consumers {
			rows = append(rows, &row{Name: c.Kind, Note: "accepts: SYNs to an unprotected port"})
		}
		drop := &row{Name: "knockgate-drop", Note: "drops: SYNs to a protected port, no grant"}
		clustered := &row{Name: kg1c.String(), Note: fmt.Sprintf("accepts, as knockgate, while a cluster peer (bench/clusterpeer) publishes %d grants/s to it", peerRate)}
		for round := 1; round <= o.rounds && ctx.Err() == nil; round++ {
			for i, c := range consumers {
				step("section 2: round %d/%d, %s, flat out to tcp/%d", round, o.rounds, c, openPort)
				t, err := b.throughput(ctx, c, steerQueue0, pinned(openPort), nil)
				rows[i].Trials = append(rows[i].Trials, trial{T: t, Err: err})
			}
			if !o.skipped("cluster") {
				step("section 2: round %d/%d, %s, flat out to tcp/%d", round, o.rounds, kg1c, openPort)
				t, err := b.throughput(ctx, kg1c, steerQueue0, pinned(openPort), nil)
				clustered.Trials = append(clustered.Trials, trial{T: t, Err: err})
			}
			step("section 2: round %d/%d, knockgate, flat out to protected tcp/%d", round, o.rounds, protectedPort)
			t, err := b.throughput(ctx, kg1, steerQueue0, pinned(protectedPort), nil)
			drop.Trials = append(drop.Trials, trial{T: t, Err: err})
		}
		rows = append(rows, drop)
		if !o.skipped("cluster") {
			rows = append(rows, clustered)
		}
		rep.tput = rows
	}

	// 2b. Sustainable rate: bisection per consumer, the consumers
	// alternating step by step.
	if !o.skipped("sustainable") && len(rep.tput) > 0 && ctx.Err() == nil {
		var ss []*search
		var cs []consumer
		for _, c := range consumers {
			if r := named(rep.tput, c.Kind); r != nil && len(r.ok()) > 0 {
				ss = append(ss, &search{Name: c.Kind, Flat: r.med(rateOf)})
				cs = append(cs, c)
			}
		}
		lo := make([]float64, len(ss))
		hi := make([]float64, len(ss))
		next := make([]float64, len(ss))
		for i, s := range ss {
			hi[i] = 1.25 * s.Flat
			next[i] = 0.85 * s.Flat
		}
		const lossLimit = 0.005
		for k := 0; k < o.searchSteps && ctx.Err() == nil; k++ {
			for i, c := range cs {
				rate := int(next[i])
				step("sustainable: step %d/%d, %s at %d/s", k+1, o.searchSteps, c, rate)
				g := genSpec{Dst: gwAddr4, Port: openPort, Count: int(float64(rate) * 1.5), Max: 3 * time.Second, Rate: rate, CPUs: o.genCPU}
				t, err := b.throughput(ctx, c, steerQueue0, g, nil)
				st := searchStep{Target: rate, Achieved: t.Gen.Rate, Loss: t.Loss, QDropped: t.QDropped, UDropped: t.UDropped, Err: err}
				if err == nil {
					st.Pass = t.Loss < lossLimit
					if st.Pass {
						// A generator that fell short proves only the rate it reached.
						lo[i] = max(lo[i], min(float64(rate), t.Gen.Rate))
						ss[i].Best = lo[i]
					} else {
						hi[i] = float64(rate)
					}
				}
				ss[i].Steps = append(ss[i].Steps, st)
				next[i] = (lo[i] + hi[i]) / 2
			}
		}
		rep.sustain = ss
	}

	// 3. Latency: no queue, then each consumer, alternating.
	if !o.skipped("latency") && ctx.Err() == nil {
		rows := []*row{{Name: "no queue"}}
		for _, c := range consumers {
			rows = append(rows, &row{Name: c.Kind})
		}
		for round := 1; round <= o.rounds && ctx.Err() == nil; round++ {
			for i, r := range rows {
				step("section 3: round %d/%d, %s, %d connects", round, o.rounds, r.Name, o.latencyN)
				var c *consumer
				if i > 0 {
					c = &consumers[i-1]
				}
				l, err := b.latency(ctx, c, o.latencyN)
				r.Trials = append(r.Trials, trial{L: l, Err: err})
			}
		}
		rep.latency = rows
	}

	// 5. Scaling, drain mode: 1 vs 2 queues with both cores free for the
	// consumers (drain.go), the consumers alternating and the order of 1
	// and 2 queues swapped every round.
	kg2 := consumer{Kind: "knockgate", Queues: 2}
	kg2ok, why := b.kgSupports(kg2)
	if !kg2ok {
		rep.kgQueuesUnsupported = why
	}
	if !o.skipped("drain") && ctx.Err() == nil {
		var cs []consumer
		for _, c := range consumers {
			for _, n := range []int{1, 2} {
				if c.Kind == "knockgate" && n == 2 && !kg2ok {
					continue
				}
				cs = append(cs, consumer{Kind: c.Kind, Queues: n})
			}
		}
		rows := make([]*row, len(cs))
		for i, c := range cs {
			rows[i] = &row{Name: c.String()}
		}
		for round := 1; round <= o.rounds && ctx.Err() == nil; round++ {
			for k := range cs {
				i := k
				if round%2 == 0 {
					i = k ^ 1 // 2 queues before 1 queue
					if i >= len(cs) || cs[i].Kind != cs[k].Kind {
						i = k
					}
				}
				c := cs[i]
				step("section 5: round %d/%d, drain, %s", round, o.rounds, c)
				d, err := b.drain(ctx, c, o.drainFill, o.drainPoll, o.drainPollCPU)
				if err != nil {
					step("  failed: %v", err)
				} else {
					step("  %d drained in %.1f ms (first verdict %.1f ms, queues empty at %s): %s/s; accepted %d, counted %d, fill drops %d+%d+%d; consumer %.2f cores, %.2f µs/packet; machine busy %.2f, idle %.2f cores; %d polls (mean %.0f µs, last %.0f µs), %.1f µs CPU each",
						d.filled(), d.Seconds*1e3, d.FirstVerdict*1e3, msList(d.PerQueue), kpps(d.Rate), d.Accepted, d.Counted, d.QDropped, d.UDropped, d.Lost,
						d.CPUCores, d.CPUPerPacket, d.MachineBusy/d.Seconds, d.MachineIdle/d.Seconds, d.Polls, d.PollEvery, d.PollLastGap, d.PollCPU)
				}
				rows[i].Trials = append(rows[i].Trials, trial{D: d, Err: err})
			}
		}
		rep.drain = rows
	}

	// 5b. Scaling with a live generator, generator and consumers unpinned:
	// generator-bound context for drain mode (the generator and its
	// softirq take one of the two cores).
	if !o.skipped("scaling") && ctx.Err() == nil {
		free := genSpec{Dst: gwAddr4, Port: openPort, Count: 5_000_000, Max: o.window, Src: spoofWide4}
		cs := []consumer{refgo1, {Kind: "refgo", Queues: 2}, kg1}
		if kg2ok {
			cs = append(cs, kg2)
		}
		if b.refc != "" {
			cs = append(cs, refc1, consumer{Kind: "refc", Queues: 2})
		}
		rows := make([]*row, len(cs))
		for i, c := range cs {
			rows[i] = &row{Name: c.String()}
		}
		for round := 1; round <= o.rounds && ctx.Err() == nil; round++ {
			for i, c := range cs {
				mode := steerQueue0
				if c.Queues == 2 {
					mode = steerBalance2
				}
				step("section 5: round %d/%d, %s, unpinned", round, o.rounds, c)
				t, err := b.throughput(ctx, c, mode, free, nil)
				rows[i].Trials = append(rows[i].Trials, trial{T: t, Err: err})
			}
		}
		rep.scaling = rows
	}

	// 5c. A flood of first knocks from 100,000 spoofed IPv6 sources into a
	// 10,000-entry table, pinned as in section 2; refgo gets the same
	// packets for scale.
	if !o.skipped("flood") && ctx.Err() == nil {
		flood := genSpec{Dst: gwAddr6, Port: knockPort, Count: 5_000_000, Max: o.window, Src: spoof6, Sources: 100_000, CPUs: o.genCPU}
		kgFlood := consumer{Kind: "knockgate", Queues: 1, MaxSources: 10_000}
		rows := []*row{{Name: "refgo", Note: "accepts the same packets"}, {Name: "knockgate", Note: "max_sources = 10000", Extra: map[string]float64{}}}
		for round := 1; round <= o.rounds && ctx.Err() == nil; round++ {
			step("section 5: round %d/%d, knock flood, refgo", round, o.rounds)
			t, err := b.throughput(ctx, refgo1, steerQueue0, flood, nil)
			rows[0].Trials = append(rows[0].Trials, trial{T: t, Err: err})
			step("section 5: round %d/%d, knock flood, knockgate", round, o.rounds)
			after := func() {
				for _, m := range []string{"knockgate_tracked_sources", "knockgate_evictions_total"} {
					if v, err := metricValue(m); err == nil {
						rows[1].Extra[m] = max(rows[1].Extra[m], v)
					}
				}
			}
			t, err = b.throughput(ctx, kgFlood, steerQueue0, flood, after)
			rows[1].Trials = append(rows[1].Trials, trial{T: t, Err: err})
		}
		rep.flood = rows
	}
	if err := b.setSteering(steerNone); err != nil && ctx.Err() == nil {
		rep.notes = append(rep.notes, fmt.Sprintf("resetting the steering rule failed: %v", err))
	}
}
