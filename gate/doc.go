// Package gate is knockgate's only contact with the kernel. It owns the
// NFQUEUE netlink socket, turns the bytes of each queued packet into a
// verdict.Packet (Parse), asks a Decider what to do with it, and hands the
// verdict back to the kernel. It knows nothing of policies, logs or metrics:
// callers observe decisions through Config.Observe and Queue.Stats.
//
// # Privileges
//
// Opening and binding a queue needs CAP_NET_ADMIN in the network namespace
// that owns the queue (nfnetlink_queue checks it on every config message).
// Entering another namespace through Config.NetNS needs CAP_SYS_ADMIN too.
//
// # When the gate is not running
//
// knockgate does not write firewall rules; the operator's rule sends packets
// here, for example
//
//	iptables -t mangle -A PREROUTING -m conntrack --ctstate NEW -p tcp -j NFQUEUE --queue-num 0
//
// Without --queue-bypass, the kernel drops every packet sent to a queue that
// no program has bound: while knockgate is stopped, crashed or restarting,
// the ports behind the rule are closed (fail closed). Packets waiting in the
// queue when the socket closes are dropped as well. When the queue is bound
// but full (Config.MaxQueueLen packets awaiting a verdict), or our socket's
// receive buffer is (the kernel then reports ENOBUFS, counted in Stats), the
// kernel drops new packets, unless Config.FailOpen is set, in which case it
// accepts them without asking. FailOpen therefore trades the gate's
// protection for availability under load; leave it off for a gate.
package gate
