package cluster

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// SkewWarn is the clock skew past which a peer's expiries can no longer be
// trusted to the second; Node logs a warning when a peer crosses it.
const SkewWarn = time.Second

// Config configures a Node.
type Config struct {
	// Name is this gateway's name, the Origin of the grants it makes;
	// the transport must know it by the same name.
	Name string
	// Policy identifies this gateway's policy; peers whose hash differs
	// are reported (OnPolicyMismatch, MemberStatus.PolicyDiffers).
	Policy PolicyHash
	// Limits bound what peers may add. Limits.Door is called from the
	// transport's goroutines, concurrently with reloads: it must read the
	// current policy safely.
	Limits Limits
	// Apply receives the effective changes that facts from peers made,
	// in the order they were merged. It runs on a transport goroutine,
	// never on a packet path, with the Node's lock held: it must not call
	// the Node, and should only hand the changes to the engine.
	Apply func(Changes)
	// Store, when set, is the state to start from (restored from the
	// state file, or kept across a transport restart); nil starts empty.
	Store *Store
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives membership changes and clock-skew warnings; nil
	// discards them.
	Logger *slog.Logger
	// OnPropagation, when set, receives for each update message from a
	// peer the time from its sender's timestamp to its merge here (which
	// includes the two clocks' skew).
	OnPropagation func(from string, d time.Duration)
	// OnPolicyMismatch, when set, is called when a peer is first seen
	// with a policy hash other than ours, or with another one than before.
	OnPolicyMismatch func(peer string, theirs PolicyHash)
}

// Stats are a Node's counters since it started, for metrics.
type Stats struct {
	// In counts facts in update messages from peers that passed the
	// checks, by kind, whether or not they changed anything (full states
	// are not counted: they repeat every fact); Out counts facts
	// published.
	In, Out [NumFactKinds]uint64
	// Ignored counts refused messages and facts, by reason.
	Ignored [NumReasons]uint64
	// Update messages and their bytes, received and sent; a broadcast to
	// n peers counts n messages.
	MessagesIn, MessagesOut, BytesIn, BytesOut uint64
	// Full states and their bytes, received and sent on push/pull.
	StatesIn, StatesOut, StateBytesIn, StateBytesOut uint64
	// Members counts the alive members, this gateway included.
	Members int
}

// MemberStatus is a member and what this gateway has heard from it.
type MemberStatus struct {
	Member
	// LastContact is when its last message arrived; zero if none has.
	LastContact time.Time
	// Skew is its clock minus ours, from its last message's timestamp
	// (so it includes the one-way delay, about 0.1 ms on a LAN).
	Skew time.Duration
	// Policy is its policy hash, from its last message; PolicyDiffers
	// says that it is known and differs from ours.
	Policy        PolicyHash
	PolicyDiffers bool
}

// Node ties a Store to a Transport: it publishes local changes to every
// peer, merges theirs, and answers push/pull with its whole state.
type Node struct {
	cfg    Config
	limits Limits
	now    func() time.Time
	logger *slog.Logger

	// mu serialises merges with their Apply, so the engine receives
	// changes in the order the store made them.
	mu    sync.Mutex
	store *Store

	tmu sync.RWMutex
	t   Transport

	pmu    sync.Mutex
	peers  map[string]*peer
	policy PolicyHash

	in, out [NumFactKinds]atomic.Uint64
	ignored [NumReasons]atomic.Uint64
	// traffic by Kind-1 (updates, states), then in and out.
	msgs, bytes [2][2]atomic.Uint64
}

type peer struct {
	last       time.Time
	skew       time.Duration
	policy     PolicyHash
	warnedSkew bool
}

// NewNode starts a Node on the transport that connect returns (Memberlist
// returns one). A nil connect makes a Node without peers, whose Publish
// only merges locally.
func NewNode(cfg Config, connect func(Handler) (Transport, error)) (*Node, error) {
	if cfg.Name == "" || len(cfg.Name) > MaxName {
		return nil, fmt.Errorf("failed to start cluster node: name %q is empty or longer than %d bytes", cfg.Name, MaxName)
	}
	n := &Node{cfg: cfg, limits: cfg.Limits.withDefaults(), now: cfg.Now, logger: cfg.Logger,
		store: cfg.Store, peers: make(map[string]*peer), policy: cfg.Policy}
	if n.now == nil {
		n.now = time.Now
	}
	if n.logger == nil {
		n.logger = slog.New(slog.DiscardHandler)
	}
	if n.store == nil {
		n.store = NewStore()
	}
	if connect != nil {
		t, err := connect(handler{n})
		if err != nil {
			return nil, err
		}
		// Peers key what they hear by the message's sender name, and
		// status joins it with the member name: the two must agree.
		if !slices.ContainsFunc(t.Members(), func(m Member) bool { return m.Self && m.Name == cfg.Name }) {
			t.Close()
			return nil, fmt.Errorf("failed to start cluster node %q: the transport knows this gateway by another name", cfg.Name)
		}
		n.tmu.Lock()
		n.t = t
		n.tmu.Unlock()
	}
	return n, nil
}

func (n *Node) transport() Transport {
	n.tmu.RLock()
	defer n.tmu.RUnlock()
	return n.t
}

// Publish merges a local change and sends it to every live peer. It fills
// in what the caller may leave out: a grant's Origin (this gateway), its
// ports' order, and a revoke's Until (At plus the door's longest grant).
// It returns the effective changes, which the engine may need when the
// merge joined the change with what peers had sent, or when a tombstone
// from a peer beats a grant published (Changes.Revokes has it then). A send error still
// leaves the change merged; push/pull repairs the peers it missed.
func (n *Node) Publish(u Update) (Changes, error) {
	now := n.now()
	u.Grants = append([]Grant(nil), u.Grants...)
	for i := range u.Grants {
		g := &u.Grants[i]
		if g.Origin == "" {
			g.Origin = n.cfg.Name
		}
		g.Ports = SortPorts(g.Ports)
	}
	u.Revokes = append([]Revoke(nil), u.Revokes...)
	for i := range u.Revokes {
		r := &u.Revokes[i]
		if r.Until.IsZero() {
			maxOpen, ok := time.Duration(0), false
			if n.limits.Door != nil {
				maxOpen, ok = n.limits.Door(r.Door)
			}
			if !ok {
				return Changes{}, fmt.Errorf("failed to publish revoke: door %q is unknown", r.Door)
			}
			r.Until = r.At.Add(maxOpen)
		}
	}
	n.pmu.Lock()
	policy := n.policy
	n.pmu.Unlock()
	msg, err := AppendMessage(nil, &Message{Kind: KindUpdate, Sender: n.cfg.Name, Sent: now, Policy: policy, Update: u})
	if err != nil {
		return Changes{}, fmt.Errorf("failed to publish: %w", err)
	}
	n.mu.Lock()
	ch := n.store.Merge(&u, now)
	// A local grant that a peer's tombstone already beats (the revoke was
	// stamped later by a clock ahead of ours) is dropped everywhere else:
	// the engine must drop it too.
	for i := range u.Grants {
		if r, ok := n.store.beats(&u.Grants[i], now); ok && !slices.Contains(ch.Revokes, r) {
			ch.Revokes = append(ch.Revokes, r)
		}
	}
	n.mu.Unlock()
	countFacts(&n.out, &u)
	t := n.transport()
	if t == nil {
		return ch, nil
	}
	sent, err := t.Broadcast(msg)
	n.count(KindUpdate, 1, sent, len(msg))
	if err != nil {
		return ch, fmt.Errorf("failed to publish to every peer: %w", err)
	}
	return ch, nil
}

// Restore merges facts without sending them or calling Apply: the state
// file's content at start, whose effective grants the caller gives the
// engine itself.
func (n *Node) Restore(u Update) Changes {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.store.Merge(&u, n.now())
}

// Expire drops expired state; the daemon calls it from its sweep ticker.
func (n *Node) Expire(now time.Time) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.store.Expire(now)
}

// Snapshot returns every live fact, for the state file.
func (n *Node) Snapshot(now time.Time) Update {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.store.Snapshot(now)
}

// Grants returns the effective live grants, with the gateway each was made
// on (Origin), for status.
func (n *Node) Grants(now time.Time) []Grant {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.store.Grants(now)
}

// SetPolicy changes the policy hash sent to peers and compared with theirs,
// after a reload.
func (n *Node) SetPolicy(h PolicyHash) {
	n.pmu.Lock()
	defer n.pmu.Unlock()
	n.policy = h
}

// Members returns the members with what this gateway has heard from each.
func (n *Node) Members() []MemberStatus {
	t := n.transport()
	if t == nil {
		return []MemberStatus{{Member: Member{Name: n.cfg.Name, Self: true}}}
	}
	ms := t.Members()
	out := make([]MemberStatus, len(ms))
	n.pmu.Lock()
	defer n.pmu.Unlock()
	for i, m := range ms {
		out[i].Member = m
		if p := n.peers[m.Name]; p != nil && !m.Self {
			out[i].LastContact, out[i].Skew, out[i].Policy = p.last, p.skew, p.policy
			out[i].PolicyDiffers = p.policy != n.policy
		}
	}
	return out
}

// MaxSkew is the largest clock skew, either way, among the alive peers
// that have sent a message: the value for a clock-skew gauge.
func (n *Node) MaxSkew() time.Duration {
	var worst time.Duration
	for _, m := range n.Members() {
		if m.Self || m.State != MemberAlive || m.LastContact.IsZero() {
			continue
		}
		worst = max(worst, m.Skew, -m.Skew)
	}
	return worst
}

// Stats returns the counters.
func (n *Node) Stats() Stats {
	var s Stats
	for i := range s.In {
		s.In[i], s.Out[i] = n.in[i].Load(), n.out[i].Load()
	}
	for i := range s.Ignored {
		s.Ignored[i] = n.ignored[i].Load()
	}
	s.MessagesIn, s.MessagesOut = n.msgs[0][0].Load(), n.msgs[0][1].Load()
	s.BytesIn, s.BytesOut = n.bytes[0][0].Load(), n.bytes[0][1].Load()
	s.StatesIn, s.StatesOut = n.msgs[1][0].Load(), n.msgs[1][1].Load()
	s.StateBytesIn, s.StateBytesOut = n.bytes[1][0].Load(), n.bytes[1][1].Load()
	if t := n.transport(); t != nil {
		for _, m := range t.Members() {
			if m.State == MemberAlive {
				s.Members++
			}
		}
	} else {
		s.Members = 1
	}
	return s
}

// Close leaves the cluster. The Store stays readable (Snapshot, Grants).
func (n *Node) Close() error {
	n.tmu.Lock()
	t := n.t
	n.t = nil
	n.tmu.Unlock()
	if t == nil {
		return nil
	}
	return t.Close()
}

func countFacts(c *[NumFactKinds]atomic.Uint64, u *Update) {
	c[FactGrant].Add(uint64(len(u.Grants)))
	c[FactRevoke].Add(uint64(len(u.Revokes)))
	c[FactReplay].Add(uint64(len(u.Replays)))
	c[FactTOTP].Add(uint64(len(u.TOTP)))
	c[FactBan].Add(uint64(len(u.Bans)))
}

// receive decodes, checks and merges one message of kind want.
func (n *Node) receive(b []byte, want Kind) {
	now := n.now()
	n.count(want, 0, 1, len(b))
	m, err := DecodeMessage(b)
	if err == nil && m.Kind != want {
		err = fmt.Errorf("%w: kind %d where %d belongs", ErrMalformed, m.Kind, want)
	}
	if err != nil {
		n.ignored[decodeReason(err)].Add(1)
		n.logger.Debug("cluster message refused", "err", err)
		return
	}
	if m.Sender == n.cfg.Name {
		n.ignored[ReasonSelf].Add(1)
		return
	}
	n.heard(m.Sender, m.Policy, m.Sent.Sub(now), now)
	if r, ok := n.limits.checkSent(m.Sent, now); !ok {
		n.ignored[r].Add(1)
		n.logger.Debug("cluster message refused", "from", m.Sender, "reason", r.String(), "sent", m.Sent)
		return
	}
	n.limits.filter(&m.Update, now, func(r Reason) { n.ignored[r].Add(1) }, func(k FactKind) {
		// A full state repeats every live fact each PushPull interval;
		// only updates count as facts received.
		if want == KindUpdate {
			n.in[k].Add(1)
		}
	})
	n.mu.Lock()
	ch := n.store.Merge(&m.Update, now)
	if !ch.Empty() && n.cfg.Apply != nil {
		n.cfg.Apply(ch)
	}
	n.mu.Unlock()
	if want == KindUpdate {
		if ch.Empty() && m.Update.Len() > 0 {
			n.ignored[ReasonDuplicate].Add(1)
		}
		if n.cfg.OnPropagation != nil {
			n.cfg.OnPropagation(m.Sender, now.Sub(m.Sent))
		}
	}
}

// heard records a message from a peer: contact, clock skew, policy.
func (n *Node) heard(name string, policy PolicyHash, skew time.Duration, now time.Time) {
	n.pmu.Lock()
	p := n.peers[name]
	if p == nil {
		p = &peer{}
		n.peers[name] = p
	}
	mismatch := policy != n.policy && (p.last.IsZero() || policy != p.policy)
	p.last, p.skew, p.policy = now, skew, policy
	warn := (skew > SkewWarn || skew < -SkewWarn) && !p.warnedSkew
	if warn || skew <= SkewWarn && skew >= -SkewWarn {
		p.warnedSkew = warn
	}
	n.pmu.Unlock()
	if warn {
		n.logger.Warn("cluster peer clock is off: grants it makes expire early or late here", "peer", name, "skew", skew)
	}
	if mismatch {
		n.logger.Warn("cluster peer has another policy: updates for doors this gateway lacks are ignored", "peer", name)
		if n.cfg.OnPolicyMismatch != nil {
			n.cfg.OnPolicyMismatch(name, policy)
		}
	}
}

// handler is the Node as a transport sees it, kept apart so Node's own
// methods are only what the daemon calls.
type handler struct{ n *Node }

func (h handler) Receive(b []byte)    { h.n.receive(b, KindUpdate) }
func (h handler) MergeState(b []byte) { h.n.receive(b, KindState) }
func (h handler) LocalState() []byte  { return h.n.localState() }

func (n *Node) localState() []byte {
	now := n.now()
	n.mu.Lock()
	u := n.store.Snapshot(now)
	n.mu.Unlock()
	n.pmu.Lock()
	policy := n.policy
	n.pmu.Unlock()
	b, err := AppendMessage(nil, &Message{Kind: KindState, Sender: n.cfg.Name, Sent: now, Policy: policy, Update: u})
	if err != nil {
		// Peers still get every update directly; only repair is lost.
		n.logger.Error("cluster state too large to send in full", "err", err)
		return nil
	}
	n.count(KindState, 1, 1, len(b))
	return b
}

// count adds msgs messages of size bytes of kind k to the traffic
// counters, dir 0 in and 1 out.
func (n *Node) count(k Kind, dir, msgs, size int) {
	n.msgs[k-1][dir].Add(uint64(msgs))
	n.bytes[k-1][dir].Add(uint64(msgs * size))
}
