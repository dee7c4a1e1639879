package main

import (
	"reflect"
	"testing"
)

// Result lines as go test -bench -benchmem prints them. A benchmark's own
// metrics (b.ReportMetric) stand between ns/op and B/op: read by position,
// they hid the allocations of the benchmark that reported them.
func TestParseBenchLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want microResult
		ok   bool
	}{
		{"BenchmarkParse/ipv4-tcp-syn-2   \t160000000\t         7.5 ns/op\t       0 B/op\t       0 allocs/op",
			microResult{Name: "BenchmarkParse/ipv4-tcp-syn", NsOp: 7.5, Mem: true}, true},
		{"BenchmarkStatePerSource/max_sources=4096-2   200   1210 ns/op   209.7 B/grant   130.5 B/source   32.00 shards   48 B/op   3 allocs/op",
			microResult{Name: "BenchmarkStatePerSource/max_sources=4096", NsOp: 1210, BOp: 48, Allocs: 3, Mem: true,
				Extra: []metric{{209.7, "B/grant"}, {130.5, "B/source"}, {32, "shards"}}}, true},
		{"BenchmarkKnockFlood   1000   418.7 ns/op",
			microResult{Name: "BenchmarkKnockFlood", NsOp: 418.7}, true},
		{"BenchmarkDecideParallel/procs=2-16 1000 59.5 ns/op 0 B/op 0 allocs/op",
			microResult{Name: "BenchmarkDecideParallel/procs=2", NsOp: 59.5, Mem: true}, true},
		{"BenchmarkSPA/valid", microResult{}, false},
		{"--- BENCH: BenchmarkSPA/valid-2", microResult{}, false},
		{"ok  \tgithub.com/knockgate/knockgate/verdict\t12.3s", microResult{}, false},
		{"BenchmarkX-2 100 fast ns/op", microResult{}, false},
	} {
		got, ok := parseBenchLine(tc.line)
		if ok != tc.ok || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseBenchLine(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

// The state-per-source target quotes the range BenchmarkStatePerSource
// reported, over its sub-benchmarks only.
func TestMicroRange(t *testing.T) {
	r := &report{micro: []microResult{
		{Name: "BenchmarkStatePerSource/max_sources=4096", Extra: []metric{{209.7, "B/grant"}, {130.5, "B/source"}}},
		{Name: "BenchmarkStatePerSource/max_sources=100000", Extra: []metric{{167.9, "B/source"}}},
		{Name: "BenchmarkOther", Extra: []metric{{999, "B/source"}}},
	}}
	lo, hi, ok := r.microRange("BenchmarkStatePerSource/", "B/source")
	if !ok || lo != 130.5 || hi != 167.9 {
		t.Errorf("microRange = %v, %v, %v; want 130.5, 167.9, true", lo, hi, ok)
	}
	if _, _, ok := r.microRange("BenchmarkStatePerSource/", "B/entry"); ok {
		t.Error("microRange found a unit no benchmark reported")
	}
}

// The throughput targets compare knockgate with each reference by name:
// its rate and its CPU per packet, and say when knockgate's rate was
// only a lower bound.
func TestThroughputTargets(t *testing.T) {
	tp := func(rate, cpu float64, sat bool) trial {
		return trial{T: tputResult{Rate: rate, CPUPerVerdict: cpu, Saturated: sat}}
	}
	r := &report{tput: []*row{
		{Name: "refgo", Trials: []trial{tp(60e3, 17, true), tp(70e3, 17, true), tp(65e3, 17, true)}},
		{Name: "knockgate", Trials: []trial{tp(150e3, 6, false), tp(160e3, 6, true), tp(155e3, 6, false)}},
		{Name: "refc", Trials: []trial{tp(120e3, 8, true), tp(125e3, 8, true), tp(130e3, 8, true)}},
	}}
	want := map[string]string{
		"throughput ≥ 0.9 × refgo (go-nfqueue)":                 "2.38× (155.0k vs 65.0k verdicts/s; CPU per packet 6.00 vs 17.00 µs); knockgate was mostly not saturated (generator-bound), so its rate is a lower bound",
		"throughput ≥ 0.8 × refc (libnetfilter_queue, issue 7)": "1.24× (155.0k vs 125.0k verdicts/s; CPU per packet 6.00 vs 8.00 µs); knockgate was mostly not saturated (generator-bound), so its rate is a lower bound",
	}
	for _, tg := range r.targets() {
		if w, ok := want[tg.What]; ok {
			if tg.Measured != w || tg.Pass != "pass" {
				t.Errorf("%s: %q, %s; want %q, pass", tg.What, tg.Measured, tg.Pass, w)
			}
			delete(want, tg.What)
		}
	}
	for w := range want {
		t.Errorf("no target %q", w)
	}
}
