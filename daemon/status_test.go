package daemon

import (
	"testing"

	"github.com/knockgate/knockgate/verdict"
)

// A grant opened by knocks shows in the status report and reaches the
// state file; one revoked through the control socket leaves both.
func TestStatusAndRevoke(t *testing.T) {
	l := startLab(t, "", twoDoors)
	c := Client{Socket: l.dir + "/kg.sock"}
	if dec := l.qs[0].feed(t, syn("198.51.100.7", 22)); dec.Verdict != verdict.Drop {
		t.Fatalf("protected port before the knock: %v", dec)
	}
	l.open("198.51.100.7", 7000)
	l.open("2001:db8::7", 8000)
	if dec := l.qs[0].feed(t, syn("198.51.100.7", 22)); dec.Verdict != verdict.Accept {
		t.Fatalf("protected port after the knock: %v", dec)
	}

	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"ssh 198.51.100.7", "web 2001:db8::7"}; !same(grants(st), want) {
		t.Fatalf("status grants %v, want %v", grants(st), want)
	}
	if st.Version != "test" || st.Policy != l.policy || st.Grants != 2 || st.Queue.Queues != 1 ||
		st.Queue.Packets != 6 || st.Queue.Accepted != 1 || st.Queue.Dropped != 5 {
		t.Fatalf("status: %+v", st)
	}
	eventually(t, "grants saved", func() bool {
		return same(l.savedGrants(), []string{"ssh 198.51.100.7", "web 2001:db8::7"}) ||
			same(l.savedGrants(), []string{"web 2001:db8::7", "ssh 198.51.100.7"})
	})

	if live, err := c.Revoke("ssh", "198.51.100.7"); err != nil || !live {
		t.Fatalf("revoke: %v, %v", live, err)
	}
	if live, err := c.Revoke("ssh", "198.51.100.7"); err != nil || live {
		t.Fatalf("second revoke: %v, %v", live, err)
	}
	if _, err := c.Revoke("nope", "198.51.100.7"); err == nil {
		t.Fatal("revoke for an unknown door succeeded")
	}
	if dec := l.qs[0].feed(t, syn("198.51.100.7", 22)); dec.Verdict != verdict.Drop {
		t.Fatalf("protected port after the revoke: %v", dec)
	}
	if st, _ := c.Status(); !same(grants(st), []string{"web 2001:db8::7"}) {
		t.Fatalf("status after the revoke: %v", grants(st))
	}
	eventually(t, "revoke saved", func() bool { return same(l.savedGrants(), []string{"web 2001:db8::7"}) })
	if n := len(l.logLines("grant revoked")); n != 1 {
		t.Fatalf("%d grant revoked lines, want 1:\n%s", n, l.logs)
	}
}
