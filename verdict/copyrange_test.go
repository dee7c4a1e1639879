package verdict

import "testing"

// The kernel copies only headers for knocks, but whole datagrams once a
// door reads SPA payloads.
func TestCopyRange(t *testing.T) {
	knock := Policy{Doors: []Door{{Name: "k"}}}
	if got := knock.CopyRange(); got != 0 {
		t.Errorf("knock-only policy: copy range %d, want 0 (headers only)", got)
	}
	withSPA := Policy{Doors: []Door{{Name: "k"}, {Name: "s", SPA: &SPA{}}}}
	if got := withSPA.CopyRange(); got < 1500 {
		t.Errorf("policy with SPA: copy range %d, want at least a 1500-byte MTU", got)
	}
}
