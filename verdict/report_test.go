package verdict

import (
	"testing"
	"time"
)

func TestSweepEndsGrantsAndProgress(t *testing.T) {
	e, err := NewEngine(testPolicy(), t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range cat(knockSSH(alice, 0, 1000), knockSSH(carol, 10*time.Second, 1000)) {
		e.Decide(s.p, t0.Add(s.at))
	}
	e.Decide(pkt(bob, "tcp/7000", 1), t0) // left in progress
	if st := e.Stats(); st.Grants != 2 || st.Sources != 1 {
		t.Fatalf("stats before sweep: %+v", st)
	}
	var ended []Grant
	e.Sweep(t0.Add(31*time.Second), func(g Grant) { ended = append(ended, g) })
	if len(ended) != 1 || ended[0].Source != alice || ended[0].Door != "ssh" ||
		!ended[0].Until.Equal(t0.Add(30*time.Second+200*time.Millisecond)) {
		t.Fatalf("ended = %+v, want alice's ssh grant", ended)
	}
	if st := e.Stats(); st.Grants != 1 || st.Sources != 0 {
		t.Fatalf("stats after sweep: %+v", st)
	}
	if got := e.ActiveGrants(t0.Add(31 * time.Second)); got["ssh"] != 1 || got["web"] != 0 || len(got) != 2 {
		t.Fatalf("ActiveGrants = %v, want ssh 1, web 0", got)
	}
	live := e.Grants(t0.Add(31 * time.Second))
	if len(live) != 1 || live[0].Source != carol {
		t.Fatalf("live grants = %+v, want carol's", live)
	}
}
