package gate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/knockgate/knockgate/verdict"
)

// Defaults for Config.
const (
	// DefaultCopyRange covers an IPv6 header, 156 bytes of extension
	// headers and a TCP header with the longest options (60 bytes), or the
	// first 200 or so bytes of a UDP payload such as an SPA datagram.
	DefaultCopyRange = 256
	// DefaultMaxQueueLen is the number of packets the kernel holds for us
	// before it drops (or, with FailOpen, accepts) new ones. The kernel's
	// own default is 1024. A burst of a scan or flood lands here while a
	// batch is being decided: 16384 packets are about 0.1 s of the most
	// one queue verdicts on a small machine, and cost kernel memory (about
	// 1 KiB each) only while they wait.
	DefaultMaxQueueLen = 16384

	// minCopyRange fits an IPv6 header and a TCP header without options;
	// with less, every IPv6 TCP packet would fail to parse and be dropped.
	minCopyRange = ipv6Header + tcpMinHeader
)

// Config says which queue to serve and how.
type Config struct {
	// Queue is the number given to the NFQUEUE target's --queue-num.
	Queue uint16
	// CopyRange is how many bytes of each packet the kernel copies to us;
	// 0 means DefaultCopyRange. Parse needs the headers, not the payload.
	CopyRange uint32
	// MaxQueueLen caps the packets awaiting a verdict; 0 means
	// DefaultMaxQueueLen.
	MaxQueueLen uint32
	// FailOpen sets NFQA_CFG_F_FAIL_OPEN: when the queue or the receive
	// buffer is full the kernel accepts packets instead of dropping them.
	// See the package doc.
	FailOpen bool
	// AcceptMark and AcceptMask, when AcceptMask is not 0, mark every packet
	// the gate accepts: the bits of the packet mark inside AcceptMask are
	// replaced by AcceptMark's, the others kept. A static rule later in the
	// packet's path can then tell a packet the gate accepted from one the
	// kernel let through on its own (--queue-bypass, or FailOpen when the
	// queue is full), which carries no such mark. Dropped packets are not
	// marked. AcceptMark must lie inside AcceptMask.
	AcceptMark, AcceptMask uint32
	// ReadBuffer is the size in bytes of the socket's receive buffer; 0
	// sizes it to hold MaxQueueLen packets of CopyRange bytes. A smaller
	// buffer caps the backlog below MaxQueueLen: with the kernel's default
	// (net.core.rmem_default, often 208 KiB) about 256 packets of 256 bytes
	// fit, and the kernel drops the rest and reports ENOBUFS.
	ReadBuffer int
	// Logger receives the queue's rare events; nil discards them.
	Logger *slog.Logger
	// Observe, when set, is called for every packet after its verdict was
	// sent, with the decision taken (ReasonMalformed for packets Parse
	// refused). It runs on the receive goroutine, so it must be quick, and
	// it must not keep p.Payload, which aliases the receive buffer. took is
	// how long the decision took (0 for malformed packets), for metrics.
	Observe func(p verdict.Packet, d verdict.Decision, took time.Duration)
}

// Decider is what the gate asks for each parsed packet.
type Decider interface {
	Decide(p verdict.Packet, now time.Time) verdict.Decision
}

// Stats counts what a Queue has seen since Open.
type Stats struct {
	// Packets is the number of packets received from the kernel.
	Packets uint64
	// Accepted and Dropped count the verdicts sent (or attempted).
	Accepted, Dropped uint64
	// Malformed counts packets Parse refused; they are dropped.
	Malformed uint64
	// VerdictErrors counts verdicts the socket failed to send; the kernel
	// keeps such a packet until the queue is unbound, then drops it.
	VerdictErrors uint64
	// ENOBUFS counts the times the kernel told us it had dropped messages
	// because our socket's receive buffer was full.
	ENOBUFS uint64
	// ReadErrors counts other receive errors and kernel messages that
	// carried no packet id.
	ReadErrors uint64
	// Receives and Sends count the system calls that read packets and
	// sent verdicts: under load one of each serves many packets. Receives
	// also counts the quiet ones that time out (every recvTimeout).
	Receives, Sends uint64
}

// malformedDecision is the decision for a packet Parse refused: it fails
// closed.
var malformedDecision = verdict.Decision{
	Verdict: verdict.Drop,
	Reason:  verdict.ReasonMalformed,
	Door:    verdict.NoDoor,
	Reset:   verdict.NoDoor,
}

// maxBatch caps the packets one receive takes, and so the verdicts one send
// carries. Under load the kernel's queue holds far more than this, and one
// recvmmsg call takes them all; when it is quiet a receive returns with the
// one packet there is. No packet waits for a batch to fill.
const maxBatch = 64

// slotOverhead is the room in each receive slot for what the kernel puts
// around the copied bytes: the netlink and nfgen headers and the packet
// header, mark, timestamp, interfaces, hardware address, capture length,
// uid and gid attributes, 150 bytes or so in all.
const slotOverhead = 512

// recvTimeout bounds how long a receive blocks, and so how long Run takes to
// notice that its context is done: the receive loop blocks in the kernel
// rather than in Go's poller, which saves an epoll round per packet when
// the queue is quiet but leaves no other way to wake it.
const recvTimeout = 200 * time.Millisecond

// bindTimeout bounds the wait for the kernel to acknowledge the bind.
const bindTimeout = 5 * time.Second

// Queue serves one netfilter queue.
type Queue struct {
	cfg   Config
	log   *slog.Logger
	sock  *os.File // nil for a Queue of the unit tests
	ready chan struct{}

	// send hands the kernel a buffer of verdict messages in one system
	// call; unit tests replace it.
	send func(b []byte) error

	// The fields down to mu belong to the receive loop once Run has
	// started it. They are allocated once, so serving a packet allocates
	// nothing.
	decider Decider
	rx      receiver
	batch   batch
	out     []byte // the verdict messages of the batch being sent
	// bindSeq is the sequence number of the bind request; bound and
	// bindErr record the kernel's answer to it.
	bindSeq uint32
	bound   bool
	bindErr error

	mu      sync.Mutex
	running bool
	closed  bool
	cancel  context.CancelFunc
	// stop tells the receive loop to return at its next wake-up.
	stop atomic.Bool

	closeOnce sync.Once
	closeErr  error

	packets, accepted, dropped, malformed atomic.Uint64
	verdictErrors, enobufs, readErrors    atomic.Uint64
	receives, sends                       atomic.Uint64
}

// batch holds the packets of one receive from their decision until after
// their verdicts are sent, when they are observed. pkt[i].Payload aliases
// the receive buffer, which stays untouched until the next receive.
type batch struct {
	n    int
	id   [maxBatch]uint32
	mark [maxBatch]uint32 // what an accepted packet leaves with
	pkt  [maxBatch]verdict.Packet
	dec  [maxBatch]verdict.Decision
	took [maxBatch]time.Duration
	// Counted here and added to the Queue's counters once per batch.
	accepted, malformed uint64
}

// verdictOf is the netfilter verdict for packet i, and whether it carries a
// new mark: only accepted packets are marked, and only with an AcceptMask.
func (q *Queue) verdictOf(i int) (v uint32, setMark bool) {
	if q.batch.dec[i].Verdict == verdict.Accept {
		return nfAccept, q.cfg.AcceptMask != 0
	}
	return nfDrop, false
}

// newQueue builds a Queue without a socket, for Open and for tests.
func newQueue(cfg Config) (*Queue, error) {
	if cfg.CopyRange == 0 {
		cfg.CopyRange = DefaultCopyRange
	}
	if cfg.CopyRange < minCopyRange {
		return nil, fmt.Errorf("copy range of %d bytes is too short for an ipv6 and a tcp header (%d bytes)", cfg.CopyRange, minCopyRange)
	}
	if cfg.CopyRange > maxCopyRange {
		return nil, fmt.Errorf("copy range of %d bytes is above the %d the kernel copies at most", cfg.CopyRange, maxCopyRange)
	}
	if cfg.MaxQueueLen == 0 {
		cfg.MaxQueueLen = DefaultMaxQueueLen
	}
	if cfg.ReadBuffer < 0 {
		return nil, fmt.Errorf("read buffer of %d bytes is negative", cfg.ReadBuffer)
	}
	if cfg.ReadBuffer == 0 {
		cfg.ReadBuffer = readBufferFor(cfg.MaxQueueLen, cfg.CopyRange)
	}
	if cfg.AcceptMark&^cfg.AcceptMask != 0 {
		return nil, fmt.Errorf("accept mark %#x has bits outside its mask %#x", cfg.AcceptMark, cfg.AcceptMask)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	q := &Queue{
		cfg:   cfg,
		log:   log.With("queue", cfg.Queue),
		ready: make(chan struct{}),
		out:   make([]byte, 0, maxBatch*markedMsgLen),
	}
	q.rx.init(int(cfg.CopyRange) + slotOverhead)
	return q, nil
}

// maxCopyRange is the most the kernel copies of a packet (NFQNL_MAX_COPY_RANGE
// is 0xffff less the netlink overhead; it silently caps larger requests).
const maxCopyRange = 0xffff

// Open opens a netlink socket for queue cfg.Queue. The queue is not bound,
// and the kernel sends it nothing, until Run. It is a queue of the network
// namespace the calling thread is in, as the socket is; to serve another
// namespace's, call Open on a thread switched into it.
func Open(cfg Config) (*Queue, error) {
	q, err := newQueue(cfg)
	if err != nil {
		return nil, fmt.Errorf("failed to open queue %d: %w", cfg.Queue, err)
	}
	sock, err := openSocket(q.cfg.ReadBuffer)
	if err != nil {
		return nil, fmt.Errorf("failed to open queue %d: %w", cfg.Queue, err)
	}
	q.sock = sock
	return q, nil
}

// readBufferFor sizes a receive buffer for n queued packets of copyRange
// bytes. The kernel charges each message the truesize of its skb, not its
// length: a 256-byte copy costs about 830 bytes (BENCHMARKS.md, "The hot
// path", "Receive buffer"). copyRange + 512 per packet is above that, and
// the kernel doubles what SO_RCVBUFFORCE asks for (socket(7)), so n
// packets fit with room to spare.
func readBufferFor(n, copyRange uint32) int {
	const maxBuffer = 1 << 30 // the kernel caps SO_RCVBUFFORCE at INT_MAX/2
	return int(min(uint64(n)*(uint64(copyRange)+512), maxBuffer))
}

// Ready is closed once Run has bound the queue and packets flow to us. It
// is never closed if binding fails.
func (q *Queue) Ready() <-chan struct{} { return q.ready }

// Run binds the queue and serves packets until ctx is done: each packet is
// parsed, decided by d and given its verdict; a packet that fails to parse
// is dropped. Run returns nil once ctx is done and the socket is closed,
// which unbinds the queue (the kernel drops packets still awaiting a
// verdict), or an error if binding fails or the socket becomes unusable.
// A Queue runs at most once.
//
// Run reads on the calling goroutine, which spends its time blocked in the
// kernel: a queue costs one OS thread.
func (q *Queue) Run(ctx context.Context, d Decider) error {
	if d == nil {
		return fmt.Errorf("failed to run queue %d: no decider", q.cfg.Queue)
	}
	q.mu.Lock()
	if q.closed || q.running || q.sock == nil {
		q.mu.Unlock()
		return fmt.Errorf("failed to run queue %d: it is closed or already running", q.cfg.Queue)
	}
	q.running = true
	ctx, cancel := context.WithCancel(ctx)
	q.cancel = cancel
	q.mu.Unlock()
	defer cancel()
	q.decider = d

	stopped := context.AfterFunc(ctx, func() { q.stop.Store(true) })
	defer stopped()

	rc, err := q.sock.SyscallConn()
	if err != nil {
		return fmt.Errorf("failed to run queue %d: %w", q.cfg.Queue, err)
	}
	var runErr error
	// Control holds a reference on the descriptor while the loop runs, so
	// a concurrent Close cannot free its number for reuse under us: the
	// kernel closes it only once the loop has returned.
	if err := rc.Control(func(fd uintptr) { runErr = q.loop(int(fd)) }); err != nil && runErr == nil {
		runErr = err
	}
	// Closing the socket is what makes the unbind certain: the kernel
	// destroys a queue whose owning socket is released
	// (nfqnl_rcv_nl_event), dropping the packets still waiting in it.
	cerr := q.closeSocket()
	if runErr != nil {
		what := "bind"
		if q.bound {
			what = "serve"
		}
		return fmt.Errorf("failed to %s queue %d: %w", what, q.cfg.Queue, runErr)
	}
	q.log.Info("queue unbound", "receives", q.receives.Load(), "sends", q.sends.Load(), "packets", q.packets.Load())
	if cerr != nil {
		q.log.Warn("failed to close queue socket", "err", cerr)
	}
	return nil
}

// yieldEvery is how often the loop passes through Go's scheduler. A
// goroutine that only ever goes from one system call to the next never
// does, and once it has not for 10 ms (forcePreemptNS) the runtime's
// sysmon thread takes its P away at every look, 20 µs apart, whenever it
// finds it in a system call; every such take resets sysmon to its fastest
// pace, and the reader wakes to a P it has to take back. A yield now and
// then keeps sysmon at its slow pace, and the reader's wake-to-read time
// at what libnetfilter_queue's C loop takes, for the cost of one
// runtime.Gosched at most 500 times a second. BENCHMARKS.md ("The hot
// path", "Latency") has the trace and the figures.
const yieldEvery = 2 * time.Millisecond

// loop binds the queue on socket fd and serves it until q.stop. It returns
// an error if binding fails, or if fd stops being a descriptor (EBADF),
// which would otherwise make every receive fail at once, forever.
func (q *Queue) loop(fd int) error {
	// The socket is blocking (openSocket): the loop waits in recvmmsg
	// itself, with a timeout to notice q.stop.
	tv := unix.NsecToTimeval(recvTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("failed to set receive timeout: %w", err)
	}
	q.send = func(b []byte) error {
		for {
			_, err := unix.Write(fd, b)
			if err != unix.EINTR {
				return err
			}
		}
	}
	var flags uint32
	if q.cfg.FailOpen {
		flags = nfqaCfgFFailOpen
	}
	q.bindSeq = uint32(time.Now().UnixNano())&0x7fffffff | 1
	if err := q.send(configMsg(q.cfg.Queue, q.bindSeq, q.cfg.CopyRange, q.cfg.MaxQueueLen, flags)); err != nil {
		return err
	}
	// The acknowledgement arrives on the socket packets arrive on, and
	// packets may come before it: they are served like any other.
	deadline := time.Now().Add(bindTimeout)
	announced := false
	lastYield := time.Now()
	for !q.stop.Load() {
		n, err := q.rx.recv(fd)
		q.receives.Add(1)
		switch {
		case err == nil:
		case err == unix.EAGAIN || err == unix.EINTR:
			// The receive timed out: time to look at q.stop.
		case err == unix.ENOBUFS:
			// The kernel dropped messages because we read too slowly;
			// the packets were dropped (or, failing open, accepted) by
			// the queue. The socket stays usable.
			if c := q.enobufs.Add(1); logWorthy(c) {
				q.log.Warn("kernel dropped queue messages: socket receive buffer full", "enobufs", c)
			}
		default:
			if c := q.readErrors.Add(1); logWorthy(c) {
				q.log.Warn("failed to receive from queue", "err", err, "read_errors", c)
			}
			if err == unix.EBADF {
				return fmt.Errorf("failed to receive: %w", err)
			}
		}
		for i := range n {
			q.consume(q.rx.datagram(i))
		}
		q.flush()
		if now := time.Now(); now.Sub(lastYield) > yieldEvery {
			lastYield = now
			runtime.Gosched()
		}
		if q.bindErr == unix.EPERM {
			// nfnetlink_queue refuses a queue another socket holds with
			// the same errno as a missing capability.
			return fmt.Errorf("%w: another program may serve this queue, or CAP_NET_ADMIN is missing", q.bindErr)
		} else if q.bindErr != nil {
			return q.bindErr
		}
		if !q.bound {
			if time.Now().After(deadline) {
				return fmt.Errorf("kernel did not acknowledge the bind within %v", bindTimeout)
			}
			continue
		}
		if !announced {
			announced = true
			close(q.ready)
			// The kernel reports the buffer it granted, which is double
			// what we asked for, or less if SO_RCVBUF was capped.
			rbuf, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
			attrs := []any{"copy_range", q.cfg.CopyRange, "max_queue_len", q.cfg.MaxQueueLen,
				"read_buffer", rbuf, "fail_open", q.cfg.FailOpen}
			if q.cfg.FailOpen {
				// Fail-closed rules ignore marks: naming one would mislead.
				attrs = append(attrs, "accept_mark", fmt.Sprintf("%#x/%#x", q.cfg.AcceptMark, q.cfg.AcceptMask))
			}
			q.log.Info("queue bound", attrs...)
		}
	}
	if !q.bound {
		return errors.New("stopped before the kernel acknowledged the bind")
	}
	return nil
}

// consume handles one datagram from the socket: packets join the batch;
// errors the kernel reports are counted, the bind's acknowledgement noted.
func (q *Queue) consume(b []byte, from uint32, truncated bool) {
	if from != 0 {
		// Only the kernel (port 0) speaks for the queue.
		q.readErrors.Add(1)
		return
	}
	for len(b) > 0 {
		typ, body, rest, err := nextMessage(b, truncated)
		if err != nil {
			q.readErrors.Add(1)
			return
		}
		b = rest
		switch typ {
		case nfqnlMsgPacket:
			var m packetMsg
			if err := parsePacket(body, &m); err != nil && !m.hasID {
				// Without an id there is nothing to give a verdict to.
				q.readErrors.Add(1)
				continue
			} else if err != nil {
				// The id is there but the rest is not: drop the packet.
				m.payload = nil
			}
			q.serve(m.id, m.mark, m.payload)
		case nlmsgError:
			errno, eseq, ok := parseErrorMsg(body)
			switch {
			case !ok:
				q.readErrors.Add(1)
			case q.bindSeq != 0 && eseq == q.bindSeq:
				q.bound = errno == 0
				if errno != 0 {
					q.bindErr = syscall.Errno(-errno)
				}
			case errno != 0:
				// Verdicts ask for no acknowledgement, so an error
				// message answers one the kernel refused, typically
				// ENOENT for a packet it no longer holds.
				if c := q.verdictErrors.Add(1); logWorthy(c) {
					q.log.Warn("kernel refused a verdict", "err", syscall.Errno(-errno), "verdict_errors", c)
				}
			}
		case nlmsgDone:
		default:
			q.readErrors.Add(1)
		}
	}
}

// Close stops Run, if it is running, and closes the socket.
func (q *Queue) Close() error {
	q.mu.Lock()
	q.closed = true
	cancel := q.cancel
	q.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if err := q.closeSocket(); err != nil {
		return fmt.Errorf("failed to close queue %d: %w", q.cfg.Queue, err)
	}
	return nil
}

func (q *Queue) closeSocket() error {
	q.closeOnce.Do(func() {
		if q.sock != nil {
			q.closeErr = q.sock.Close()
		}
	})
	return q.closeErr
}

// Stats returns a snapshot of the counters.
func (q *Queue) Stats() Stats {
	return Stats{
		Packets:       q.packets.Load(),
		Accepted:      q.accepted.Load(),
		Dropped:       q.dropped.Load(),
		Malformed:     q.malformed.Load(),
		VerdictErrors: q.verdictErrors.Load(),
		ENOBUFS:       q.enobufs.Load(),
		ReadErrors:    q.readErrors.Load(),
		Receives:      q.receives.Load(),
		Sends:         q.sends.Load(),
	}
}

// serve decides one packet, whose mark is mark, and adds it to the batch
// whose verdicts flush sends. It allocates nothing.
func (q *Queue) serve(id, mark uint32, b []byte) {
	if q.batch.n == maxBatch {
		q.flush()
	}
	bt := &q.batch
	i := bt.n
	bt.n++
	p := &bt.pkt[i]
	d := malformedDecision
	var took time.Duration
	if err := Parse(b, p); err != nil {
		// No log line per packet: a flood of garbage must stay cheap.
		bt.malformed++
		*p = verdict.Packet{}
	} else {
		now := time.Now()
		d = q.decider.Decide(*p, now)
		took = time.Since(now)
	}
	bt.id[i], bt.mark[i], bt.dec[i], bt.took[i] = id, q.acceptedMark(mark), d, took
	if d.Verdict == verdict.Accept {
		bt.accepted++
	}
}

// flush sends the verdicts of the batch in one system call, then shows its
// packets to the observer. A run of packets with consecutive ids and the
// same verdict, none of which needs a mark of its own, gets one batch
// verdict: the kernel applies it to every packet of the queue up to the
// last id, and the ones before the run already have theirs, sent earlier
// in the same buffer, which the kernel handles in order.
func (q *Queue) flush() {
	bt := &q.batch
	if bt.n == 0 {
		return
	}
	out := q.out[:0]
	for i := 0; i < bt.n; {
		v, setMark := q.verdictOf(i)
		j := i
		if !setMark {
			for j+1 < bt.n && bt.id[j+1] == bt.id[j]+1 {
				if w, m := q.verdictOf(j + 1); w != v || m {
					break
				}
				j++
			}
		}
		out = appendVerdict(out, q.cfg.Queue, bt.id[j], v, bt.mark[i], setMark, j > i)
		i = j + 1
	}
	q.out = out
	// Counted before the verdicts leave: once a client sees its packet
	// pass or vanish, Stats already includes it.
	q.packets.Add(uint64(bt.n))
	q.accepted.Add(bt.accepted)
	q.dropped.Add(uint64(bt.n) - bt.accepted)
	q.malformed.Add(bt.malformed)
	q.sends.Add(1)
	if err := q.send(out); err != nil {
		if c := q.verdictErrors.Add(uint64(bt.n)); logWorthy(c) {
			q.log.Warn("failed to send verdicts", "err", err, "packets", bt.n, "verdict_errors", c)
		}
	}
	for i := range bt.n {
		if q.cfg.Observe != nil {
			q.cfg.Observe(bt.pkt[i], bt.dec[i], bt.took[i])
		}
		// The payload aliases the receive buffer, about to be reused.
		bt.pkt[i].Payload = nil
	}
	bt.n, bt.accepted, bt.malformed = 0, 0, 0
}

// acceptedMark is the mark an accepted packet leaves with, given the mark
// it came with: AcceptMark within AcceptMask, the other bits untouched, so
// marks other tools set in those bits survive.
func (q *Queue) acceptedMark(old uint32) uint32 {
	return old&^q.cfg.AcceptMask | q.cfg.AcceptMark
}

// receiver reads up to maxBatch datagrams per recvmmsg into slots of one
// buffer. The message headers point into the buffer and are set up once.
type receiver struct {
	buf   []byte
	slot  int
	last  int // datagrams the last receive returned
	iov   [maxBatch]unix.Iovec
	names [maxBatch]unix.RawSockaddrNetlink
	msgs  [maxBatch]mmsghdr
}

// mmsghdr is struct mmsghdr (recvmmsg(2)); Go lays it out as C does on
// every architecture, trailing padding included.
type mmsghdr struct {
	Hdr unix.Msghdr
	Len uint32
}

func (r *receiver) init(slot int) {
	r.slot = slot
	r.buf = make([]byte, maxBatch*slot)
	for i := range r.msgs {
		r.iov[i].Base = &r.buf[i*slot]
		r.iov[i].SetLen(slot)
		h := &r.msgs[i].Hdr
		h.Iov = &r.iov[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Namelen = unix.SizeofSockaddrNetlink
	}
	r.last = maxBatch
}

// recv blocks until at least one datagram is there (or the receive timeout
// passes), then takes every other one already waiting, up to maxBatch
// (MSG_WAITFORONE).
func (r *receiver) recv(fd int) (int, error) {
	for i := range r.last {
		r.msgs[i].Hdr.Namelen = unix.SizeofSockaddrNetlink
		r.msgs[i].Hdr.Flags = 0
	}
	r.last = 0
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&r.msgs[0])), maxBatch, unix.MSG_WAITFORONE, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	r.last = int(n)
	return int(n), nil
}

// datagram returns the bytes of the i-th datagram of the last receive, the
// port it came from, and whether the kernel cut it to fit its slot.
func (r *receiver) datagram(i int) ([]byte, uint32, bool) {
	m := &r.msgs[i]
	n := min(int(m.Len), r.slot)
	return r.buf[i*r.slot : i*r.slot+n], r.names[i].Pid, m.Hdr.Flags&unix.MSG_TRUNC != 0
}

// logWorthy thins out a repeating event's log lines to counts 1, 2, 4, 8,
// ...: enough to notice, too few to flood the log.
func logWorthy(n uint64) bool { return n&(n-1) == 0 }
