package rules

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/knockgate/knockgate/cluster"
	"github.com/knockgate/knockgate/verdict"
)

// Cluster is the policy's cluster block: the gateways that share their
// grants, revokes, replay cache, TOTP use and bans (package cluster). A
// policy without one is a single gateway.
type Cluster struct {
	// Node is this gateway's unique name in the cluster; the host name
	// unless the block says otherwise.
	Node string
	// Listen is where peers reach this gateway, over TCP and UDP.
	Listen netip.AddrPort
	// Peers are other gateways' listen addresses; joining any one finds
	// the rest, and packets from their addresses to Listen's port are
	// always accepted (verdict.Policy.ClusterPeers).
	Peers      []netip.AddrPort
	SecretFile string
	// Key is the shared key read from SecretFile.
	Key []byte
}

type rawCluster struct {
	Node       *hcl.Attribute `hcl:"node,optional"`
	Listen     *hcl.Attribute `hcl:"listen,optional"`
	Peers      *hcl.Attribute `hcl:"peers,optional"`
	SecretFile *hcl.Attribute `hcl:"secret_file,optional"`
}

// clusterSrc keeps where the listen address was written, for the check
// against the doors' ports, which are known only once every door is read.
type clusterSrc struct {
	listen *hcl.Attribute
}

// hostname is os.Hostname, a variable for tests.
var hostname = os.Hostname

func (c *compiler) cluster(b *hcl.Block, p *Policy) {
	var raw rawCluster
	c.diags = append(c.diags, gohcl.DecodeBody(b.Body, nil, &raw)...)
	cl := &Cluster{}
	ok := true
	if present(raw.Node) {
		if s, sok := c.str(raw.Node.Expr, &raw.Node.Range, "cluster node"); !sok {
			ok = false
		} else if s == "" || len(s) > cluster.MaxName {
			c.errorf(raw.Node.Expr.Range().Ptr(), &raw.Node.Range,
				fmt.Sprintf("Peers know this gateway by this name, and grants say where they were made by it: from 1 to %d bytes, unique in the cluster.", cluster.MaxName),
				"invalid cluster node %q", s)
			ok = false
		} else {
			cl.Node = s
		}
	} else {
		h, err := hostname()
		if err != nil || h == "" || len(h) > cluster.MaxName {
			c.errorf(b.DefRange.Ptr(), nil,
				fmt.Sprintf("Without node, the gateway is named by its host name, which must be from 1 to %d bytes; set node = \"gw1\" instead.", cluster.MaxName),
				"cluster node cannot default to the host name %q", h)
			ok = false
		}
		cl.Node = h
	}
	if !present(raw.Listen) {
		c.errorf(b.DefRange.Ptr(), nil, "listen is where peers reach this gateway, such as listen = \"192.0.2.1:7946\".",
			"cluster block lacks listen")
		ok = false
	} else if s, sok := c.str(raw.Listen.Expr, &raw.Listen.Range, "cluster listen"); !sok {
		ok = false
	} else if ap, err := netip.ParseAddrPort(s); err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() || ap.Addr().Zone() != "" {
		c.errorf(raw.Listen.Expr.Range().Ptr(), &raw.Listen.Range,
			"listen is this gateway's own address and port, as peers reach it, such as \"192.0.2.1:7946\" or \"[2001:db8::1]:7946\"; not 0.0.0.0, and no host name.",
			"invalid cluster listen address %q", s)
		ok = false
	} else {
		cl.Listen = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		c.clusterListen = raw.Listen
	}
	if present(raw.Peers) {
		elems, diags := hcl.ExprList(raw.Peers.Expr)
		if diags.HasErrors() {
			c.errorf(raw.Peers.Expr.Range().Ptr(), &raw.Peers.Range,
				"It must be a list written out in brackets, such as peers = [\"192.0.2.2:7946\"].", "cluster peers is not a list")
			ok = false
		}
		for _, e := range elems {
			s, sok := c.str(e, &raw.Peers.Range, "cluster peer")
			if !sok {
				ok = false
				continue
			}
			ap, err := netip.ParseAddrPort(s)
			if err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() || ap.Addr().Zone() != "" {
				c.errorf(e.Range().Ptr(), &raw.Peers.Range,
					"A peer is another gateway's listen address and port, such as \"192.0.2.2:7946\"; no host name, since the gate lets that address through.",
					"invalid cluster peer %q", s)
				ok = false
				continue
			}
			ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			if ap == cl.Listen {
				c.errorf(e.Range().Ptr(), &raw.Peers.Range, "peers are the other gateways; this one is listen.",
					"cluster peer %q is this gateway's own listen address", s)
				ok = false
				continue
			}
			cl.Peers = append(cl.Peers, ap)
		}
	}
	if !present(raw.SecretFile) {
		c.errorf(b.DefRange.Ptr(), nil,
			"Every gateway of the cluster needs the same key, from `knockgate keygen --kind cluster`: secret_file = \"/etc/knockgate/cluster.key\".",
			"cluster block lacks secret_file")
		ok = false
	} else if path, sok := c.str(raw.SecretFile.Expr, &raw.SecretFile.Range, "cluster secret_file"); !sok {
		ok = false
	} else {
		cl.SecretFile = c.relative(path)
		c.nameFile(cl.SecretFile, "the cluster secret_file")
		key, err := cluster.ReadKeyFile(cl.SecretFile)
		if err != nil {
			c.errorf(raw.SecretFile.Expr.Range().Ptr(), &raw.SecretFile.Range,
				"The file holds the cluster's shared key, as `knockgate keygen --kind cluster` writes it.",
				"%v", err)
			ok = false
		}
		cl.Key = key
	}
	if !ok {
		return
	}
	p.Cluster = cl
	p.ClusterPort = cl.Listen.Port()
	p.ClusterPeers = nil
	for _, pe := range cl.Peers {
		p.ClusterPeers = append(p.ClusterPeers, pe.Addr())
	}
}

// clusterPort refuses a cluster listen port that a door also uses, on
// either protocol (the cluster uses both): the gate would have to both
// accept the peers' packets there and treat them as knocks or guard them.
func (c *compiler) clusterPort(p *Policy, doors []*doorSrc) {
	if p.Cluster == nil || c.clusterListen == nil {
		return
	}
	port := p.Cluster.Listen.Port()
	clash := func(door, what string, at verdict.Port) {
		c.errorf(c.clusterListen.Expr.Range().Ptr(), &c.clusterListen.Range,
			"Peers reach the cluster on this port over both TCP and UDP, and the gate lets them through there; no knock, SPA or protected port may share it.",
			"cluster listen port %d is also door %q's %s %v", port, door, what, at)
		p.Cluster, p.ClusterPort, p.ClusterPeers = nil, 0, nil
	}
	for _, d := range doors {
		dr := &d.door
		for _, l := range []struct {
			what  string
			ports []verdict.Port
		}{{"sequence", dr.Sequence}, {"close_sequence", dr.CloseSequence}, {"open", dr.Open}} {
			for _, pt := range l.ports {
				if pt.Num == port {
					clash(dr.Name, l.what+" port", pt)
					return
				}
			}
		}
		if dr.SPA != nil && dr.SPA.Port.Num == port {
			clash(dr.Name, "spa port", dr.SPA.Port)
			return
		}
		if dr.TOTP != nil && port >= dr.TOTP.Lo && port <= dr.TOTP.Hi {
			clash(dr.Name, "totp range port", verdict.Port{Proto: dr.TOTP.Proto, Num: port})
			return
		}
	}
}

// ClusterRestartChanges names what differs between two cluster blocks
// that only a restart applies: all but the peers.
func ClusterRestartChanges(running, next *Cluster) []string {
	switch {
	case running == nil && next == nil:
		return nil
	case running == nil || next == nil:
		return []string{"cluster"}
	}
	var out []string
	if running.Node != next.Node {
		out = append(out, "cluster node")
	}
	if running.Listen != next.Listen {
		out = append(out, "cluster listen")
	}
	if !bytes.Equal(running.Key, next.Key) {
		out = append(out, "cluster secret_file")
	}
	return out
}
