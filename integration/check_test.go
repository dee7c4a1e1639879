//go:build integration

package integration

import (
	"strings"
	"testing"
	"time"
)

// knockgate check reads the gateway's live rules: the lab's, as loaded,
// match its policy; with the mangle table flushed it names the queue rules
// as missing and exits 1; and the daemon, started without them, warns.
func TestCheckLiveRules(t *testing.T) {
	l := newLab(t)
	l.writePolicy(l.doors)
	gw := l.ns("gw")
	out, err := l.run("", "ip", "netns", "exec", gw, binPath, "check", "--config", l.config())
	if err != nil || strings.Count(out, ": ok\n") != 2 {
		t.Fatalf("check with the rules loaded: %v\n%s", err, out)
	}
	l.must("ip", "netns", "exec", gw, "iptables", "-t", "mangle", "-F")
	out, err = l.run("", "ip", "netns", "exec", gw, binPath, "check", "--config", l.config())
	if err == nil || !strings.Contains(out, "IPv4 (iptables): missing: -A PREROUTING ! -i lo") ||
		!strings.Contains(out, "missing: -A KNOCKGATE -p tcp -j NFQUEUE --queue-num 0") || !strings.Contains(out, "IPv6 (ip6tables): ok") {
		t.Fatalf("check without the IPv4 rules: %v\n%s", err, out)
	}
	l.start()
	l.waitLog("steering rule missing", time.Second, "family=ipv4")
	if l.hasLog("steering rule missing", "family=ipv6") {
		t.Error("the daemon warned of IPv6 rules that are loaded")
	}
}
