// Command clusterpeer is a cluster member for make bench: it joins a
// knockgate daemon's cluster with the cluster package and publishes grants
// for one door at a steady rate, bounded in time and count, from sources
// in 2001:db8:ee::/48 (documentation range, apart from the lab's spoofed
// sources), so that the throughput trial measures verdicts while grants
// replicate. It prints "publishing" once joined and, at the end, one JSON
// line with what it sent.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/knockgate/knockgate/cluster"
)

func main() {
	var (
		name    = flag.String("name", "bench-peer", "this member's name")
		bind    = flag.String("bind", "127.0.0.1:7947", "where the daemon reaches this member")
		peer    = flag.String("peer", "127.0.0.1:7946", "the daemon's cluster listen address")
		keyFile = flag.String("key", "", "the cluster key file (knockgate keygen --kind cluster)")
		door    = flag.String("door", "ssh", "the door the grants open")
		openFor = flag.Duration("open-for", 10*time.Second, "each grant's length (within the door's open_for)")
		rate    = flag.Int("rate", 1000, "grants a second")
		dur     = flag.Duration("for", 20*time.Second, "how long to publish")
		count   = flag.Int("count", 100_000, "at most this many grants")
		joinMax = flag.Duration("join-timeout", 10*time.Second, "how long to wait for the daemon")
	)
	flag.Parse()
	if err := run(*name, *bind, *peer, *keyFile, *door, *openFor, *rate, *dur, *count, *joinMax); err != nil {
		fmt.Fprintln(os.Stderr, "clusterpeer:", err)
		os.Exit(1)
	}
}

type result struct {
	Published int     `json:"published"`
	Errors    int     `json:"errors"`
	Seconds   float64 `json:"seconds"`
	Members   int     `json:"members"`
	BytesOut  uint64  `json:"bytes_out"`
}

func run(name, bind, peer, keyFile, door string, openFor time.Duration, rate int, dur time.Duration, count int, joinMax time.Duration) error {
	if rate <= 0 || count <= 0 || dur <= 0 {
		return fmt.Errorf("rate, count and duration must be positive: %d, %d, %v", rate, count, dur)
	}
	key, err := cluster.ReadKeyFile(keyFile)
	if err != nil {
		return err
	}
	b, err := netip.ParseAddrPort(bind)
	if err != nil {
		return fmt.Errorf("failed to parse -bind %q: %w", bind, err)
	}
	limits := cluster.Limits{Door: func(string) (time.Duration, bool) { return openFor, true }}
	n, err := cluster.NewNode(cluster.Config{Name: name, Limits: limits},
		cluster.Memberlist(cluster.MemberlistConfig{Name: name, Bind: b, Peers: []string{peer}, Key: key,
			RetryJoin: 200 * time.Millisecond}))
	if err != nil {
		return err
	}
	defer n.Close()
	for deadline := time.Now().Add(joinMax); n.Stats().Members < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("failed to join %s within %v", peer, joinMax)
		}
	}
	fmt.Println("publishing")
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	every := time.Second / time.Duration(rate)
	start := time.Now()
	end := start.Add(dur)
	res := result{}
	for i := 0; i < count; i++ {
		next := start.Add(time.Duration(i) * every)
		if next.After(end) {
			break
		}
		select {
		case <-stop:
			i = count
			continue
		case <-time.After(time.Until(next)):
		}
		now := time.Now()
		src := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0xee, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
		if _, err := n.Publish(cluster.Update{Grants: []cluster.Grant{{Door: door, Source: src, Opened: now, Until: now.Add(openFor)}}}); err != nil {
			res.Errors++
		}
		res.Published++
	}
	st := n.Stats()
	res.Seconds, res.Members, res.BytesOut = time.Since(start).Seconds(), st.Members, st.BytesOut
	return json.NewEncoder(os.Stdout).Encode(res)
}
