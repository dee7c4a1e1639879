package rules

// The settings a running daemon cannot change: the queues stay bound (with
// their copy range, fail-open flag and accept mark) and the metrics and
// control sockets stay open until it restarts. A reload keeps their running
// values and names the ones the file changed.

// RestartOnlyChanges names the restart-only settings that next changes
// from running, in a fixed order, for the daemon's warning that they take
// effect at the next restart. "spa (copy range)" is a door's spa block
// when the running queues copy only headers (verdict.Policy.CopyRange).
func RestartOnlyChanges(running, next *Policy) []string {
	var out []string
	for _, s := range []struct {
		name    string
		changed bool
	}{
		{"queue", next.Queue != running.Queue},
		{"queues", next.Queues != running.Queues},
		{"metrics listen", next.MetricsListen != running.MetricsListen},
		{"control_socket", next.ControlSocket != running.ControlSocket},
		{"spa (copy range)", next.CopyRange() > running.CopyRange()},
		{"fail_open", next.FailOpen != running.FailOpen},
		{"accept_mark", next.AcceptMark != running.AcceptMark || next.AcceptMask != running.AcceptMask},
	} {
		if s.changed {
			out = append(out, s.name)
		}
	}
	return append(out, ClusterRestartChanges(running.Cluster, next.Cluster)...)
}

// KeepRestartOnly sets p's restart-only settings to running's, so that p
// describes the daemon as it runs after a reload to p. The others, the
// doors and the state file among them, are p's own.
func (p *Policy) KeepRestartOnly(running *Policy) {
	p.Queue, p.Queues, p.MetricsListen, p.ControlSocket = running.Queue, running.Queues, running.MetricsListen, running.ControlSocket
	p.FailOpen, p.AcceptMark, p.AcceptMask = running.FailOpen, running.AcceptMark, running.AcceptMask
	p.KeepClusterRestartOnly(running)
}

// KeepClusterRestartOnly sets p's cluster settings that a running node
// cannot change (whether there is a cluster, its node name, listen address
// and key) to running's, and the port the gate lets peers through to with
// them; the peers, and so the addresses let through, are p's own. The
// daemon calls it before the engine takes p, so that the gate never blocks
// the port the node still listens on.
func (p *Policy) KeepClusterRestartOnly(running *Policy) {
	switch {
	case running.Cluster == nil || p.Cluster == nil:
		p.Cluster, p.ClusterPort, p.ClusterPeers = running.Cluster, running.ClusterPort, running.ClusterPeers
	default:
		cl := *p.Cluster
		cl.Node, cl.Listen, cl.Key, cl.SecretFile = running.Cluster.Node, running.Cluster.Listen, running.Cluster.Key, running.Cluster.SecretFile
		p.Cluster, p.ClusterPort = &cl, running.ClusterPort
	}
}
