package cluster

import (
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// doors is the Limits.Door of the tests' policy.
func doors(name string) (time.Duration, bool) {
	switch name {
	case "ssh":
		return time.Minute, true
	case "web":
		return 10 * time.Minute, true
	}
	return 0, false
}

// applied records what a Node's Apply receives.
type applied struct {
	mu  sync.Mutex
	chs []Changes
	at  []time.Time
}

func (a *applied) apply(ch Changes) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.chs = append(a.chs, ch)
	a.at = append(a.at, time.Now())
}

func (a *applied) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.chs)
}

// TestNodeChecks feeds a Node messages as its transport would, and checks
// that each refusal is counted under its reason and never merged.
func TestNodeChecks(t *testing.T) {
	now := t0
	var got applied
	var mismatched []string
	n, err := NewNode(Config{Name: "gw1", Policy: PolicyHash{1}, Limits: Limits{Door: doors}, Apply: got.apply,
		Now:              func() time.Time { return now },
		OnPolicyMismatch: func(peer string, _ PolicyHash) { mismatched = append(mismatched, peer) }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := handler{n}
	src := netip.MustParseAddr("203.0.113.5")
	grant := func(door string, opened time.Time, d time.Duration) Grant {
		return Grant{Door: door, Source: src, Opened: opened, Until: opened.Add(d), Origin: "gw2", Ports: []verdict.Port{ssh}}
	}
	send := func(sender string, sent time.Time, u Update) {
		t.Helper()
		b, err := AppendMessage(nil, &Message{Kind: KindUpdate, Sender: sender, Sent: sent, Policy: PolicyHash{1}, Update: u})
		if err != nil {
			t.Fatal(err)
		}
		h.Receive(b)
	}
	ok := grant("ssh", now, 30*time.Second)
	send("gw2", now.Add(-11*time.Second), Update{Grants: []Grant{ok}})                       // stale
	send("gw2", now.Add(11*time.Second), Update{Grants: []Grant{ok}})                        // future
	send("gw1", now, Update{Grants: []Grant{ok}})                                            // self
	send("gw2", now, Update{Grants: []Grant{grant("mail", now, time.Second)}})               // unknown_door
	send("gw2", now, Update{Grants: []Grant{grant("ssh", now, 2*time.Minute)}})              // too_long
	send("gw2", now, Update{Grants: []Grant{grant("ssh", now.Add(time.Hour), time.Minute)}}) // too_long: opened in the future
	send("gw2", now, Update{Grants: []Grant{grant("ssh", now.Add(-time.Minute), time.Minute)}})
	send("gw2", now, Update{Bans: []Ban{{Source: src, Until: now.Add(25 * time.Hour)}}}) // too_long
	send("gw2", now, Update{Revokes: []Revoke{{Door: "nope", Source: src, At: now, Until: now.Add(time.Minute)}}})
	h.Receive([]byte("KG\x07"))                              // malformed
	h.Receive(append([]byte("KG\x09"), make([]byte, 30)...)) // version
	if got.len() != 0 {
		t.Fatalf("refused facts applied: %+v", got.chs)
	}
	send("gw2", now, Update{Grants: []Grant{ok}})
	send("gw2", now, Update{Grants: []Grant{ok}}) // duplicate
	s := n.Stats()
	want := [NumReasons]uint64{ReasonStale: 1, ReasonFuture: 1, ReasonSelf: 1, ReasonUnknownDoor: 2, ReasonTooLong: 3,
		ReasonExpired: 1, ReasonMalformed: 1, ReasonVersion: 1, ReasonDuplicate: 1}
	if s.Ignored != want {
		for r := range NumReasons {
			if s.Ignored[r] != want[r] {
				t.Errorf("ignored %s: %d, want %d", r, s.Ignored[r], want[r])
			}
		}
	}
	if s.In[FactGrant] != 2 || s.MessagesIn != 13 {
		t.Errorf("in: %d grants, %d messages", s.In[FactGrant], s.MessagesIn)
	}
	if got.len() != 1 || len(got.chs[0].Grants) != 1 || got.chs[0].Grants[0].Origin != "gw2" {
		t.Fatalf("applied %+v", got.chs)
	}

	// A peer with another policy is reported once, and again when its
	// policy changes.
	for _, p := range []PolicyHash{{2}, {2}, {3}} {
		b, _ := AppendMessage(nil, &Message{Kind: KindUpdate, Sender: "gw3", Sent: now, Policy: p})
		h.Receive(b)
	}
	if !slices.Equal(mismatched, []string{"gw3", "gw3"}) {
		t.Errorf("policy mismatches reported: %v", mismatched)
	}
}

func TestNodePublishFillsIn(t *testing.T) {
	n, err := NewNode(Config{Name: "gw1", Limits: Limits{Door: doors}, Now: func() time.Time { return t0 }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddr("192.0.2.9")
	ch, err := n.Publish(Update{
		Grants:  []Grant{{Door: "web", Source: src, Opened: t0.Add(time.Second), Until: t0.Add(time.Minute), Ports: []verdict.Port{https, ssh, https}}},
		Revokes: []Revoke{{Door: "web", Source: src, At: t0}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Changes{
		Revokes: []Revoke{{Door: "web", Source: src, At: t0, Until: t0.Add(10 * time.Minute)}},
		Grants: []Grant{{Door: "web", Source: src, Opened: t0.Add(time.Second), Until: t0.Add(time.Minute),
			Ports: []verdict.Port{ssh, https}, Origin: "gw1"}},
	}
	if !reflect.DeepEqual(ch, want) {
		t.Fatalf("changes\n%+v\nwant\n%+v", ch, want)
	}
	if _, err := n.Publish(Update{Revokes: []Revoke{{Door: "mail", Source: src, At: t0}}}); err == nil {
		t.Fatal("revoke for an unknown door published")
	}
	// A grant opened before a revoke it has not seen, as from a clock
	// behind the revoker's: Publish says the engine must drop it.
	ch, err = n.Publish(Update{Grants: []Grant{{Door: "web", Source: src, Opened: t0.Add(-time.Second), Until: t0.Add(time.Minute)}}})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ch, Changes{Revokes: want.Revokes}) {
		t.Fatalf("beaten grant: changes %+v", ch)
	}
	if s := n.Stats(); s.Out[FactGrant] != 2 || s.Out[FactRevoke] != 1 || s.Members != 1 {
		t.Errorf("stats %+v", s)
	}
}
