package main

import (
	"strings"
	"testing"
	"time"
)

func TestOptionsCheck(t *testing.T) {
	good := options{rounds: 5, window: 1200 * time.Millisecond, latencyN: 5000, searchSteps: 5,
		knockopenMax: 150 * time.Second, drainFill: 15000, drainPoll: time.Millisecond}
	if err := good.check(); err != nil {
		t.Fatalf("the defaults: %v", err)
	}
	for _, tc := range []struct {
		flag string
		set  func(*options)
	}{
		{"-rounds", func(o *options) { o.rounds = 0 }},
		{"-window", func(o *options) { o.window = 11 * time.Minute }},
		{"-latency-n", func(o *options) { o.latencyN = -1 }},
		{"-search-steps", func(o *options) { o.searchSteps = 21 }},
		{"-knockopen-timeout", func(o *options) { o.knockopenMax = 0 }},
		{"-drain-fill", func(o *options) { o.drainFill = 16385 }},
		{"-drain-poll", func(o *options) { o.drainPoll = 2 * time.Millisecond }},
		{"-drain-poll-cpu", func(o *options) { o.drainPollCPU = -2 }},
	} {
		o := good
		tc.set(&o)
		if err := o.check(); err == nil || !strings.HasPrefix(err.Error(), tc.flag+" ") {
			t.Errorf("%s out of range: %v", tc.flag, err)
		}
	}
}

// A second run is refused while the first holds the lock, and admitted
// once it lets go.
func TestLock(t *testing.T) {
	path := t.TempDir() + "/lock"
	unlock, err := lock(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock(path); err == nil || !strings.Contains(err.Error(), "another bench run holds") {
		t.Fatalf("second lock: %v, want refused", err)
	}
	unlock()
	unlock2, err := lock(path)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}
