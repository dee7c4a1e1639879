package daemon

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// A failed knock is logged at info level with its reason, once per source
// and door in a while; debug is not needed to see why a door stayed shut.
func TestKnockFailureLogged(t *testing.T) {
	l := startLab(t, "", `
door "lan" {
  sequence   = ["udp/9000", "udp/9001"]
  open       = ["tcp/8080"]
  allow_from = ["192.0.2.0/24"]
}
`+twoDoors)
	for range 5 {
		l.qs[0].feed(t, knock("198.51.100.7", 7000))
		l.qs[0].feed(t, knock("198.51.100.7", 7007)) // not the next knock: resets ssh
	}
	l.qs[0].feed(t, knock("198.51.100.8", 8000))
	l.qs[0].feed(t, syn("198.51.100.8", 443)) // web reset by other traffic
	l.qs[0].feed(t, knock("198.51.100.9", 9000))
	var got []string
	for _, line := range l.logLines("knock failed") {
		got = append(got, fmt.Sprint(line["door"], " ", line["source"], " ", line["reason"]))
	}
	want := []string{"ssh 198.51.100.7 wrong_port", "web 198.51.100.8 wrong_port", "lan 198.51.100.9 not_allowed"}
	if !same(got, want) {
		t.Fatalf("knock failed lines %q, want %q", got, want)
	}
}

func TestFailureWord(t *testing.T) {
	for _, tt := range []struct {
		dec        verdict.Decision
		word, door string
	}{
		{verdict.Decision{Reason: verdict.ReasonKnockWrong, Door: 0, DoorName: "ssh", Reset: verdict.NoDoor}, "wrong_port", "ssh"},
		{verdict.Decision{Reason: verdict.ReasonNotAllowed, Door: 0, DoorName: "ssh", Reset: verdict.NoDoor}, "not_allowed", "ssh"},
		{verdict.Decision{Reason: verdict.ReasonPenalized, Door: verdict.NoDoor, Reset: verdict.NoDoor}, "banned", ""},
		{verdict.Decision{Reason: verdict.ReasonKnock, Door: 1, DoorName: "web", Reset: 0, ResetName: "ssh", ResetTimedOut: true}, "timeout", "ssh"},
		{verdict.Decision{Reason: verdict.ReasonNoGrant, Door: verdict.NoDoor, Reset: 0, ResetName: "ssh"}, "wrong_port", "ssh"},
		{verdict.Decision{Reason: verdict.ReasonKnock, Door: 0, DoorName: "ssh", Reset: verdict.NoDoor}, "", ""},
		{verdict.Decision{Reason: verdict.ReasonGranted, Door: 0, DoorName: "ssh", Reset: verdict.NoDoor}, "", ""},
	} {
		if w, d := failureWord(tt.dec); w != tt.word || d != tt.door {
			t.Errorf("failureWord(%+v) = %q, %q; want %q, %q", tt.dec, w, d, tt.word, tt.door)
		}
	}
}

// The limiter logs a pair once per knockLogEvery and then says how many
// failures it left out; a flood of distinct sources gets no more than the
// bucket's burst at once; and it never allocates.
func TestKnockLimiter(t *testing.T) {
	var l knockLimiter
	src := netip.MustParseAddr("198.51.100.7")
	t0 := time.Unix(1_800_000_000, 0)
	if ok, _ := l.allow(src, "ssh", t0); !ok {
		t.Fatal("first failure not logged")
	}
	for i := range 3 {
		if ok, _ := l.allow(src, "ssh", t0.Add(time.Duration(i+1)*time.Second)); ok {
			t.Fatal("repeat within knockLogEvery logged")
		}
	}
	if ok, _ := l.allow(src, "web", t0.Add(time.Second)); !ok {
		t.Fatal("another door of the same source not logged")
	}
	if ok, left := l.allow(src, "ssh", t0.Add(knockLogEvery+time.Second)); !ok || left != 3 {
		t.Fatalf("after knockLogEvery: %v, %d suppressed; want logged, 3", ok, left)
	}

	var flood knockLimiter
	logged := 0
	at := t0
	for i := range 100_000 {
		a := netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})
		if ok, _ := flood.allow(a, "ssh", at); ok {
			logged++
		}
	}
	if logged != knockLogBurst {
		t.Fatalf("a flood at one instant logged %d lines, want the burst %d", logged, knockLogBurst)
	}
	if ok, _ := flood.allow(src, "ssh", at.Add(time.Second)); !ok {
		t.Fatal("the bucket did not refill")
	}

	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		i++
		flood.allow(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), "ssh", at.Add(time.Duration(i)*time.Millisecond))
	}); n != 0 {
		t.Fatalf("allow allocates %v times", n)
	}
}

// The start-up lines give the queue and the number of queues as numbers.
func TestStartLogFields(t *testing.T) {
	l := startLab(t, "", sshDoor)
	eventually(t, "ready", func() bool { return len(l.logLines("knockgate ready")) == 1 })
	for _, msg := range []string{"knockgate starting", "knockgate ready"} {
		lines := l.logLines(msg)
		if len(lines) != 1 || lines[0]["queue"] != 0.0 || lines[0]["queues"] != 1.0 {
			t.Errorf("%s: %v, want queue=0 queues=1", msg, lines)
		}
	}
}

// observe stays off the allocator for the packets it does not log: a
// knock, and a failure the limiter leaves out.
func TestObserveFailureDoesNotAllocate(t *testing.T) {
	l := startLab(t, "", sshDoor)
	p := knock("198.51.100.7", 7007)
	wrong := verdict.Decision{Reason: verdict.ReasonKnockWrong, Door: 0, DoorName: "ssh", Reset: verdict.NoDoor}
	l.d.observe(p, wrong, 0) // logged: the limiter takes the pair
	ok := verdict.Decision{Reason: verdict.ReasonKnock, Door: 0, DoorName: "ssh", Reset: verdict.NoDoor}
	for _, dec := range []verdict.Decision{ok, wrong} {
		if n := testing.AllocsPerRun(100, func() { l.d.observe(p, dec, time.Microsecond) }); n != 0 {
			t.Errorf("observe of %v allocates %v times", dec.Reason, n)
		}
	}
}

// A wrong knock on a port that starts no sequence names no door, rather
// than door="".
func TestKnockFailureWithoutDoor(t *testing.T) {
	l := startLab(t, "", sshDoor)
	l.qs[0].feed(t, knock("203.0.113.20", 7001)) // ssh's second knock, first
	lines := l.logLines("knock failed")
	if len(lines) != 1 || lines[0]["reason"] != "wrong_port" {
		t.Fatalf("knock failed lines %v", lines)
	}
	if _, ok := lines[0]["door"]; ok {
		t.Fatalf("line names a door: %v", lines[0])
	}
}
