package daemon

import (
	"cmp"
	"context"
	"encoding/json"
	"net/netip"
	"slices"
	"time"

	"github.com/knockgate/knockgate/cluster"
	"github.com/knockgate/knockgate/metrics"
	"github.com/knockgate/knockgate/rules"
	"github.com/knockgate/knockgate/verdict"
)

// The daemon's side of a fleet (the policy's cluster block): a
// cluster.Node over memberlist, fed with what the engine records
// (verdict.ShareEvents) and an operator's revokes, and feeding what peers
// did back into the engine. The engine holds every grant, local or
// remote, so the verdict path, the state file and status see one set; the
// node's store says which gateway made each.

// shareRing is how many shared events the engine holds between two drains:
// far above what a burst of knocks makes in the moment the drain takes.
// Beyond it events are dropped (and logged), and push/pull repairs them.
const shareRing = 4096

// clusterPushPull is how often the node exchanges its full state with a
// random peer, repairing what direct sends missed (a partition, a peer
// restarted without its state file). memberlist's 30 s is made for
// thousands of nodes; a gateway fleet is a handful, and its state a few
// hundred bytes per live grant, so it can afford to heal within seconds.
const clusterPushPull = 5 * time.Second

// fleet is the running cluster node.
type fleet struct {
	node  *cluster.Node
	self  string
	ready <-chan struct{}
}

// grantID names a grant: its door and source.
type grantID struct {
	door string
	src  netip.Addr
}

// startCluster starts the cluster node when the policy has a cluster block,
// after the state file's grants are restored, which it seeds the node's
// store with. It returns the function that stops it.
func (d *Daemon) startCluster(ctx context.Context) (func(), error) {
	pol := d.gen.Load().pol
	cl := pol.Cluster
	if cl == nil {
		return func() {}, nil
	}
	now := time.Now()
	store := cluster.NewStore()
	seed := d.seedUpdate(cl.Node, pol.StateFile, now)
	store.Merge(&seed, now)
	peers := make([]string, len(cl.Peers))
	for i, p := range cl.Peers {
		peers[i] = p.String()
	}
	ready := d.eng.ShareEvents(shareRing)
	node, err := cluster.NewNode(cluster.Config{
		Name:   cl.Node,
		Policy: d.policyHash(),
		Limits: cluster.Limits{Door: d.doorLimit},
		Apply:  d.applyRemote,
		Store:  store,
		Logger: d.log,
		OnPropagation: func(_ string, took time.Duration) {
			d.m.ClusterPropagation(took)
		},
	}, cluster.Memberlist(cluster.MemberlistConfig{
		Name: cl.Node, Bind: cl.Listen, Peers: peers, Key: cl.Key,
		PushPull: cmp.Or(d.clusterPushPull, clusterPushPull), Logger: d.log.With("component", "cluster"),
	}))
	if err != nil {
		return nil, err
	}
	f := &fleet{node: node, self: cl.Node, ready: ready}
	d.fleet.Store(f)
	d.m.SetCluster(func() metrics.ClusterStats { return clusterStats(node) })
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); d.shareLoop(ctx, f) }()
	d.log.Info("cluster node started", "node", cl.Node, "listen", cl.Listen.String(), "peers", peers, "grants", len(seed.Grants))
	return func() {
		cancel()
		<-done
		if err := node.Close(); err != nil {
			d.log.Warn("cluster node did not leave cleanly", "err", err)
		}
	}, nil
}

// seedUpdate is what this gateway holds at start, for the node's store:
// the engine's grants, restored from the state file with the gateway each
// was made on, and the SPA packets used.
func (d *Daemon) seedUpdate(self, stateFile string, now time.Time) cluster.Update {
	var origins map[grantID]string
	if stateFile != "" {
		if st, err := loadState(stateFile); err == nil {
			origins = st.origin
		}
	}
	var u cluster.Update
	for _, g := range d.eng.Grants(now) {
		origin := origins[grantID{g.Door, g.Source}]
		if origin == "" {
			origin = self
		}
		u.Grants = append(u.Grants, cluster.Grant{Door: g.Door, Source: g.Source, Ports: cluster.SortPorts(g.Ports),
			Opened: g.Opened, Until: g.Until, Origin: origin})
	}
	for _, r := range d.eng.ReplayEntries(now) {
		u.Replays = append(u.Replays, cluster.Replay{Digest: r.Key, Until: r.Until})
	}
	return u
}

// policyHash identifies what gateways of a cluster must agree on, for
// peers, which warn when theirs differs: the doors (keys included: a
// packet one gateway opens for must open on every one) and what decides
// their packets. It leaves out what each gateway sets for itself, its
// cluster block (node, listen, peers), its files and sockets, and its
// table caps, which follow its memory: a hash of the whole file made
// every peer of every cluster "differ".
func (d *Daemon) policyHash() cluster.PolicyHash {
	return hashShared(d.eng.Policy())
}

func hashShared(p verdict.Policy) cluster.PolicyHash {
	b, err := json.Marshal(struct {
		Doors       []verdict.Door
		Unprotected verdict.Verdict
		Penalty     verdict.Penalty
	}{p.Doors, p.Unprotected, verdict.Penalty{Failures: p.Penalty.Failures, Within: p.Penalty.Within, Ban: p.Penalty.Ban}})
	if err != nil {
		// A policy the engine runs always encodes; should it not, no
		// peer can agree with this one, which is what an operator
		// should then hear.
		return cluster.PolicyHash{}
	}
	return cluster.HashPolicy(b)
}

// doorLimit is cluster.Limits.Door: the longest grant a door of the
// current policy makes. It reads the engine's policy, which a reload
// swaps atomically.
func (d *Daemon) doorLimit(name string) (time.Duration, bool) {
	door, ok := doorNamed(d.eng.Policy(), name)
	if !ok {
		return 0, false
	}
	return door.MaxOpenFor(), true
}

// shareLoop publishes what the engine recorded, whenever it wakes it.
func (d *Daemon) shareLoop(ctx context.Context, f *fleet) {
	var evs []verdict.SharedEvent
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.ready:
		}
		var lost uint64
		evs, lost = d.eng.DrainShared(evs[:0])
		if lost > 0 {
			d.log.Warn("cluster events dropped: peers learn of them at the next full-state exchange", "dropped", lost)
		}
		u := updateOf(evs)
		if u.Len() > 0 {
			d.publish(f, u)
		}
	}
}

// updateOf turns the engine's events into a cluster update.
func updateOf(evs []verdict.SharedEvent) cluster.Update {
	var u cluster.Update
	for _, ev := range evs {
		switch ev.Kind {
		case verdict.SharedGrant:
			u.Grants = append(u.Grants, cluster.Grant{Door: ev.Door, Source: ev.Source, Ports: ev.Ports, Opened: ev.At, Until: ev.Until})
		case verdict.SharedRevoke:
			u.Revokes = append(u.Revokes, cluster.Revoke{Door: ev.Door, Source: ev.Source, At: ev.At})
		case verdict.SharedReplay:
			u.Replays = append(u.Replays, cluster.Replay{Digest: ev.Digest, Until: ev.Until})
		case verdict.SharedTOTP:
			u.TOTP = append(u.TOTP, cluster.TOTPUse{Door: ev.Door, Step: ev.Step, Source: ev.Source, Until: ev.Until})
		case verdict.SharedBan:
			u.Bans = append(u.Bans, cluster.Ban{Source: ev.Source, Until: ev.Until})
		}
	}
	return u
}

// publish sends a local change to the peers, and gives the engine what
// the merge changed beyond it: a grant joined with a peer's, or beaten by
// a peer's revoke.
func (d *Daemon) publish(f *fleet, u cluster.Update) {
	ch, err := f.node.Publish(u)
	if err != nil {
		// A peer missed it (push/pull repairs it), or a revoke's door was
		// removed by a reload in between.
		d.log.Debug("cluster publish incomplete", "err", err)
	}
	now := time.Now()
	changed := false
	for _, r := range ch.Revokes {
		if dropped, _ := d.eng.RevokeAt(r.Door, r.Source, r.At, now); dropped {
			changed = true
			d.log.Info("grant revoked", "door", r.Door, "source", r.Source.String(), "by", "cluster")
		}
	}
	for _, g := range ch.Grants {
		if slices.ContainsFunc(u.Grants, func(p cluster.Grant) bool { return samePublished(p, g) }) {
			// What the engine made itself: applying it again would only
			// reset a max_connections grant's count.
			continue
		}
		changed = d.applyGrant(g, now) || changed
	}
	if changed {
		d.markDirty()
	}
}

// samePublished reports whether the merged grant g is the grant p as
// published, unchanged by the merge.
func samePublished(p, g cluster.Grant) bool {
	return p.Door == g.Door && p.Source == g.Source && p.Until.Equal(g.Until) &&
		slices.Equal(cluster.SortPorts(p.Ports), g.Ports)
}

// applyRemote is cluster.Config.Apply: the changes peers made, in the
// order the node merged them. It runs on a transport goroutine with the
// node's lock held, so it only hands the changes to the engine.
func (d *Daemon) applyRemote(ch cluster.Changes) {
	now := time.Now()
	revoked := false
	for _, r := range ch.Revokes {
		if dropped, _ := d.eng.RevokeAt(r.Door, r.Source, r.At, now); dropped {
			revoked = true
			d.m.GrantRevoked(r.Door)
			d.log.Info("grant revoked", "door", r.Door, "source", r.Source.String(), "by", "cluster")
		}
	}
	for _, g := range ch.Grants {
		if d.applyGrant(g, now) {
			d.log.Info("grant from cluster", "door", g.Door, "source", g.Source.String(), "origin", g.Origin,
				"until", g.Until.Format(time.RFC3339))
		}
	}
	for _, r := range ch.Replays {
		d.eng.AddReplay(r.Digest, r.Until, now)
	}
	for _, x := range ch.TOTP {
		d.eng.MarkTOTPUsed(x.Door, x.Step, x.Source)
	}
	for _, b := range ch.Bans {
		if d.eng.Ban(b.Source, b.Until, now) {
			d.log.Info("source penalized by a peer", "source", b.Source.String(), "until", b.Until.Format(time.RFC3339))
		}
	}
	// A revoke takes access away, and a used SPA packet must be on disk
	// before a crash could let it open again here: both are saved at once.
	if revoked || len(ch.Replays) > 0 {
		d.markUrgent()
	} else {
		d.markDirty()
	}
}

// applyGrant hands a merged grant to the engine. A merged grant joins the
// openings a door and source had on every gateway: the earliest opening
// to the latest end, which may span more than the door's longest grant;
// the engine is given the part it could have made itself.
func (d *Daemon) applyGrant(g cluster.Grant, now time.Time) bool {
	door, ok := doorNamed(d.eng.Policy(), g.Door)
	if !ok {
		return false
	}
	opened := g.Opened
	if lo := g.Until.Add(-door.MaxOpenFor()); opened.Before(lo) {
		opened = lo
	}
	if err := d.eng.ApplyGrant(g.Door, g.Source, g.Ports, opened, g.Until, now); err != nil {
		d.log.Warn("cluster grant refused", "origin", g.Origin, "err", err)
		return false
	}
	return true
}

// publishRevoke tells the peers of an operator's revoke, so that it ends
// the grant on every gateway (even one this gateway had not yet heard of).
func (d *Daemon) publishRevoke(door string, src netip.Addr, at time.Time) {
	if f := d.fleet.Load(); f != nil {
		d.publish(f, cluster.Update{Revokes: []cluster.Revoke{{Door: door, Source: src, At: at}}})
	}
}

// clusterSweep drops the node's expired state with the engine's.
func (d *Daemon) clusterSweep(now time.Time) {
	if f := d.fleet.Load(); f != nil {
		f.node.Expire(now)
	}
}

// keepCluster keeps, in a policy a reload brings in, what the running node
// cannot change, and warns of what the file changed: the engine must go
// on letting peers through to the port the node listens on. It runs
// before the engine takes the policy.
func (d *Daemon) keepCluster(next, running *rules.Policy) {
	for _, what := range rules.ClusterRestartChanges(running.Cluster, next.Cluster) {
		d.log.Warn("a changed setting takes effect at the next restart", "setting", what)
	}
	next.KeepClusterRestartOnly(running)
}

// clusterReloaded tells peers the new policy's hash. The node's limits
// follow the engine's policy by themselves (doorLimit).
func (d *Daemon) clusterReloaded() {
	if f := d.fleet.Load(); f != nil {
		f.node.SetPolicy(d.policyHash())
	}
}

// grantOrigins names the gateway each live grant was made on; nil without
// a cluster.
func (d *Daemon) grantOrigins(now time.Time) map[grantID]string {
	f := d.fleet.Load()
	if f == nil {
		return nil
	}
	out := map[grantID]string{}
	for _, g := range f.node.Grants(now) {
		out[grantID{g.Door, g.Source}] = g.Origin
	}
	return out
}

// ClusterStatus is the cluster part of status: this gateway's name and
// every member it knows.
type ClusterStatus struct {
	Node    string          `json:"node"`
	Members []ClusterMember `json:"members"`
}

// ClusterMember is one member as this gateway sees it.
type ClusterMember struct {
	Name  string `json:"name"`
	Addr  string `json:"addr"`
	State string `json:"state"`
	Self  bool   `json:"self,omitempty"`
	// LastContact is when its last message arrived; absent if none has.
	LastContact time.Time `json:"last_contact,omitzero"`
	// SkewSeconds is its clock minus ours, from its last message.
	SkewSeconds   float64 `json:"skew_seconds"`
	PolicyDiffers bool    `json:"policy_differs,omitempty"`
}

func (d *Daemon) clusterStatus() *ClusterStatus {
	f := d.fleet.Load()
	if f == nil {
		return nil
	}
	st := &ClusterStatus{Node: f.self}
	for _, m := range f.node.Members() {
		st.Members = append(st.Members, ClusterMember{Name: m.Name, Addr: m.Addr.String(), State: m.State.String(), Self: m.Self,
			LastContact: m.LastContact.Round(0), SkewSeconds: m.Skew.Seconds(), PolicyDiffers: m.PolicyDiffers})
	}
	slices.SortFunc(st.Members, func(a, b ClusterMember) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return st
}

func clusterStats(n *cluster.Node) metrics.ClusterStats {
	s := n.Stats()
	out := metrics.ClusterStats{Members: s.Members, ClockSkew: n.MaxSkew(), Ignored: map[string]uint64{}}
	for k := range cluster.NumFactKinds {
		out.Updates = append(out.Updates,
			metrics.ClusterUpdates{Kind: k.String(), Direction: "in", N: s.In[k]},
			metrics.ClusterUpdates{Kind: k.String(), Direction: "out", N: s.Out[k]})
	}
	for r := range cluster.NumReasons {
		out.Ignored[r.String()] = s.Ignored[r]
	}
	return out
}
