package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// MemberlistConfig configures the memberlist transport.
type MemberlistConfig struct {
	// Name is this gateway's unique name in the cluster.
	Name string
	// Bind is where peers reach this gateway, over both TCP and UDP. Port
	// 0 picks a free port (tests); the Self member's Addr reports it.
	Bind netip.AddrPort
	// Advertise, when valid, is the address peers are told to use instead
	// of Bind (behind NAT, or Bind is 0.0.0.0).
	Advertise netip.AddrPort
	// Peers are addresses ("host:port") of other gateways; joining any one
	// finds the rest. Joining is retried every RetryJoin while no peer is
	// alive, so a gateway started before its peers finds them later.
	Peers     []string
	RetryJoin time.Duration
	// Key is the shared secret (16, 24 or 32 bytes, AES-128/192/256-GCM):
	// messages without it are dropped, so a gateway without the key can
	// neither join nor inject. Required.
	Key []byte
	// PushPull is how often a full-state exchange with a random peer
	// repairs missed updates; 0 means memberlist's 30 s.
	PushPull time.Duration
	// Probe is memberlist's failure-detection probe interval; 0 means 1 s.
	Probe time.Duration
	// Logger receives memberlist's log lines at their levels; nil
	// discards them.
	Logger *slog.Logger

	// wrap, when set, stands between memberlist and its UDP/TCP
	// transport: converge_test.go cuts a node off the network with it.
	wrap func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
}

// Label keeps knockgate's packets apart from other memberlist users
// (Consul, Nomad) that might share a network and even a key.
const memberlistLabel = "knockgate/1"

// Memberlist returns a connector for NewNode that joins the cluster over
// hashicorp/memberlist.
func Memberlist(cfg MemberlistConfig) func(Handler) (Transport, error) {
	return func(h Handler) (Transport, error) { return newMemberlist(cfg, h) }
}

type mlTransport struct {
	ml     *memberlist.Memberlist
	h      Handler
	udpMax int
	stop   context.CancelFunc
	done   sync.WaitGroup
	logger *slog.Logger
}

func newMemberlist(cfg MemberlistConfig, h Handler) (*mlTransport, error) {
	if err := memberlist.ValidateKey(cfg.Key); err != nil {
		return nil, fmt.Errorf("failed to use cluster key: %w", err)
	}
	if cfg.Name == "" {
		return nil, errors.New("failed to start cluster transport: no node name")
	}
	if !cfg.Bind.IsValid() {
		return nil, errors.New("failed to start cluster transport: no bind address")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := memberlist.DefaultLANConfig()
	c.Name = cfg.Name
	c.BindAddr = cfg.Bind.Addr().String()
	c.BindPort = int(cfg.Bind.Port())
	if cfg.Advertise.IsValid() {
		c.AdvertiseAddr = cfg.Advertise.Addr().String()
		c.AdvertisePort = int(cfg.Advertise.Port())
	} else {
		c.AdvertisePort = c.BindPort
	}
	c.SecretKey = cfg.Key
	c.GossipVerifyIncoming, c.GossipVerifyOutgoing = true, true
	c.Label = memberlistLabel
	if cfg.PushPull > 0 {
		c.PushPullInterval = cfg.PushPull
	}
	if cfg.Probe > 0 {
		c.ProbeInterval = cfg.Probe
	}
	t := &mlTransport{h: h, logger: logger}
	c.Delegate = mlDelegate{t}
	c.Events = mlEvents{t}
	c.Logger = log.New(slogWriter{logger}, "", 0)
	if cfg.wrap != nil {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{c.BindAddr}, BindPort: c.BindPort, Logger: c.Logger})
		if err != nil {
			return nil, fmt.Errorf("failed to start cluster transport on %v: %w", cfg.Bind, err)
		}
		if c.BindPort == 0 {
			c.BindPort = nt.GetAutoBindPort()
			if !cfg.Advertise.IsValid() {
				c.AdvertisePort = c.BindPort
			}
		}
		c.Transport = cfg.wrap(nt)
	}
	// Updates that fit one encrypted datagram go by UDP; memberlist adds a
	// type byte, the label, and AES-GCM's version, nonce and tag.
	t.udpMax = c.UDPBufferSize - 64 - len(memberlistLabel)
	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("failed to start cluster transport on %v: %w", cfg.Bind, err)
	}
	t.ml = ml
	ctx, cancel := context.WithCancel(context.Background())
	t.stop = cancel
	if len(cfg.Peers) > 0 {
		every := cfg.RetryJoin
		if every <= 0 {
			every = 5 * time.Second
		}
		t.done.Go(func() { t.joinLoop(ctx, cfg.Peers, every) })
	}
	return t, nil
}

// joinLoop joins the peers, and joins again whenever no peer is alive:
// memberlist itself never retries a join, so a gateway that starts before
// its peers, or outlives them all, would otherwise stay alone.
func (t *mlTransport) joinLoop(ctx context.Context, peers []string, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if t.ml.NumMembers() < 2 {
			if n, err := t.ml.Join(peers); err != nil && n == 0 {
				t.logger.Debug("cluster join failed", "peers", peers, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (t *mlTransport) Broadcast(msg []byte) (int, error) {
	self := t.ml.LocalNode().Name
	sent := 0
	var errs []error
	for _, n := range t.ml.Members() {
		// Members lists the alive and the suspect: a suspect peer is
		// often only slow, and a datagram to it costs nothing.
		if n.Name == self {
			continue
		}
		var err error
		if len(msg) <= t.udpMax {
			err = t.ml.SendBestEffort(n, msg)
		} else {
			err = t.ml.SendReliable(n, msg)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("failed to send to %s: %w", n.Name, err))
			continue
		}
		sent++
	}
	return sent, errors.Join(errs...)
}

func (t *mlTransport) Members() []Member {
	self := t.ml.LocalNode().Name
	ns := t.ml.Members()
	out := make([]Member, 0, len(ns))
	for _, n := range ns {
		a, _ := netip.AddrFromSlice(n.Addr)
		out = append(out, Member{Name: n.Name, Addr: netip.AddrPortFrom(a.Unmap(), n.Port),
			State: MemberState(n.State), Self: n.Name == self})
	}
	return out
}

func (t *mlTransport) Close() error {
	t.stop()
	t.done.Wait()
	// Leaving tells the peers at once instead of letting them suspect us
	// for several probe rounds.
	lerr := t.ml.Leave(time.Second)
	serr := t.ml.Shutdown()
	if err := errors.Join(lerr, serr); err != nil {
		return fmt.Errorf("failed to close cluster transport: %w", err)
	}
	return nil
}

// mlDelegate adapts memberlist.Delegate to Handler, in serf's manner: user
// messages and push/pull state go to the handler, gossip carries nothing
// of ours (updates go direct).
type mlDelegate struct{ t *mlTransport }

func (d mlDelegate) NodeMeta(limit int) []byte                  { return nil }
func (d mlDelegate) NotifyMsg(b []byte)                         { d.t.h.Receive(b) }
func (d mlDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d mlDelegate) LocalState(join bool) []byte                { return d.t.h.LocalState() }
func (d mlDelegate) MergeRemoteState(b []byte, join bool)       { d.t.h.MergeState(b) }

// mlEvents logs membership changes. memberlist calls it with its node
// lock held, so it must not call back into memberlist (Members would
// deadlock).
type mlEvents struct{ t *mlTransport }

func (e mlEvents) NotifyJoin(n *memberlist.Node)  { e.log("cluster member joined", n) }
func (e mlEvents) NotifyLeave(n *memberlist.Node) { e.log("cluster member left or failed", n) }
func (e mlEvents) NotifyUpdate(n *memberlist.Node) {
	e.log("cluster member updated", n)
}

func (e mlEvents) log(msg string, n *memberlist.Node) {
	e.t.logger.Info(msg, "member", n.Name, "addr", n.Address())
}

// slogWriter turns memberlist's "[LEVEL] memberlist: text" lines into slog
// records at that level.
type slogWriter struct{ l *slog.Logger }

var logLevels = []struct {
	prefix string
	level  slog.Level
}{
	{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn},
	{"[ERR]", slog.LevelError}, {"[ERROR]", slog.LevelError},
}

func (w slogWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\n"))
	level := slog.LevelInfo
	for _, p := range logLevels {
		if rest, ok := strings.CutPrefix(line, p.prefix); ok {
			level, line = p.level, strings.TrimSpace(rest)
			break
		}
	}
	if w.l.Enabled(context.Background(), level) {
		w.l.Log(context.Background(), level, strings.TrimPrefix(line, "memberlist: "), "component", "memberlist")
	}
	return len(p), nil
}

var _ io.Writer = slogWriter{}
