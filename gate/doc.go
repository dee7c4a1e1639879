// Package gate is knockgate's only contact with the kernel. It owns the
// NFQUEUE netlink socket, turns the bytes of each queued packet into a
// verdict.Packet (Parse), asks a Decider what to do with it, and hands the
// verdict back to the kernel. It knows nothing of policies, logs or metrics:
// callers observe decisions through Config.Observe and Queue.Stats.
//
// # The per-packet path
//
// The Queue opens its netlink socket, binds the queue and runs the loop
// itself, without go-nfqueue: its reader decodes each message into fresh
// allocations and spends one system call per verdict and two per receive,
// and the socket it opens sits in Go's network poller, whose thread the
// kernel then wakes for every queued packet although nobody waits there.
// The socket here is blocking and outside the poller. The loop blocks in
// one recvmmsg that returns every message already queued (up to 64),
// decides each packet, and sends all their verdicts in one write: a run
// of packets with consecutive ids and the same verdict, none of them
// marked, gets one NFQNL_MSG_VERDICT_BATCH.
// When the queue is quiet a receive returns with the one packet there is,
// so no packet waits for others. Messages are read and written in place in
// buffers allocated once: serving a packet allocates nothing.
//
// # Privileges
//
// Opening and binding a queue needs CAP_NET_ADMIN in the network namespace
// that owns the queue (nfnetlink_queue checks it on every config message).
//
// # When the gate is not running
//
// knockgate does not write firewall rules; the operator's rule sends packets
// here, for example
//
//	iptables -t mangle -A PREROUTING -m conntrack --ctstate NEW -p tcp -j NFQUEUE --queue-num 0
//
// Fail-closed, the default: without --queue-bypass, the kernel drops every
// packet sent to a queue that no program has bound, so while knockgate is
// stopped, crashed or restarting, the ports behind the rule are closed.
// When the queue is bound but full (Config.MaxQueueLen packets awaiting a
// verdict), or our socket's receive buffer is (the kernel then reports
// ENOBUFS, counted in Stats), the kernel drops new packets.
//
// Fail-open (Config.FailOpen with an accept mark, and rules that use
// --queue-bypass): a packet the queue cannot take, because nobody is bound
// or it is full, is accepted by the kernel without asking us. Such a packet,
// like one we accept, skips the rest of the queueing chain and goes on at
// the next table's hook (TestQueueMarksAccepted checks it against the
// kernel: a counter after the NFQUEUE rule in mangle PREROUTING never
// moves, those in nat PREROUTING and mangle INPUT do). What tells the two apart is the mark:
// the gate sets Config.AcceptMark on what it accepts, the kernel sets
// nothing, so a static rule in mangle INPUT and FORWARD can drop new
// connections to protected ports that lack the mark. Unprotected ports then
// stay reachable while the gate is down or overloaded, protected ones do
// not. Without such a rule FailOpen trades the gate's protection for
// availability; knockgate rules --config prints the rules for a policy with
// fail_open = true.
//
// In either mode, packets still waiting in the queue when our socket closes
// are dropped: the kernel flushes a destroyed queue instance with NF_DROP.
package gate
