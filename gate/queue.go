package gate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"

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
	// own default is 1024.
	DefaultMaxQueueLen = 4096

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
	// NetNS, when not 0, is an open file descriptor of the network namespace
	// to bind the queue in (such as /var/run/netns/NAME); 0 means the
	// caller's own namespace.
	NetNS int
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
}

// malformedDecision is the decision for a packet Parse refused: it fails
// closed.
var malformedDecision = verdict.Decision{
	Verdict: verdict.Drop,
	Reason:  verdict.ReasonMalformed,
	Door:    verdict.NoDoor,
	Reset:   verdict.NoDoor,
}

// Queue serves one netfilter queue.
type Queue struct {
	cfg     Config
	log     *slog.Logger
	observe func(verdict.Packet, verdict.Decision, time.Duration)
	nf      *nfqueue.Nfqueue
	ready   chan struct{}

	// setVerdict sends a verdict, and with setMark the packet's new mark;
	// unit tests replace it.
	setVerdict func(id uint32, v int, mark uint32, setMark bool) error

	// decider and pkt belong to the receive goroutine once Run has
	// started it; pkt is reused so parsing allocates nothing.
	decider Decider
	pkt     verdict.Packet

	// runCtx is Run's context, read by the go-nfqueue log adapter to tell
	// shutdown chatter from trouble.
	runCtx atomic.Pointer[context.Context]

	mu      sync.Mutex
	running bool
	closed  bool
	cancel  context.CancelFunc

	closeOnce sync.Once
	closeErr  error

	packets, accepted, dropped, malformed atomic.Uint64
	verdictErrors, enobufs, readErrors    atomic.Uint64
}

// newQueue builds a Queue without a socket, for Open and for tests.
func newQueue(cfg Config) (*Queue, error) {
	if cfg.CopyRange == 0 {
		cfg.CopyRange = DefaultCopyRange
	}
	if cfg.CopyRange < minCopyRange {
		return nil, fmt.Errorf("copy range of %d bytes is too short for an ipv6 and a tcp header (%d bytes)", cfg.CopyRange, minCopyRange)
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
	return &Queue{
		cfg:     cfg,
		log:     log.With("queue", cfg.Queue),
		observe: cfg.Observe,
		ready:   make(chan struct{}),
	}, nil
}

// Open opens a netlink socket for queue cfg.Queue. The queue is not bound,
// and the kernel sends it nothing, until Run.
func Open(cfg Config) (*Queue, error) {
	q, err := newQueue(cfg)
	if err != nil {
		return nil, fmt.Errorf("failed to open queue %d: %w", cfg.Queue, err)
	}
	var flags uint32
	if cfg.FailOpen {
		flags |= nfqueue.NfQaCfgFlagFailOpen
	}
	nf, err := nfqueue.Open(&nfqueue.Config{
		NetNS:        cfg.NetNS,
		NfQueue:      cfg.Queue,
		MaxQueueLen:  q.cfg.MaxQueueLen,
		MaxPacketLen: q.cfg.CopyRange,
		Copymode:     nfqueue.NfQnlCopyPacket,
		Flags:        flags,
		// Since Linux 3.8 a queue receives packets of every family and
		// the kernel ignores the family in bind and verdict messages
		// (NFQNL_CFG_CMD_PF_BIND is a no-op), so one socket serves IPv4
		// and IPv6 alike.
		AfFamily: syscall.AF_UNSPEC,
		Logger:   nfLogger{q},
	})
	if err != nil {
		return nil, fmt.Errorf("failed to open queue %d: %w", cfg.Queue, err)
	}
	// We leave NETLINK_NO_ENOBUFS off: the kernel's ENOBUFS is how we learn
	// that it dropped messages for us, and Stats counts it.
	if err := setReadBuffer(nf.Con, q.cfg.ReadBuffer); err != nil {
		nf.Close()
		return nil, fmt.Errorf("failed to open queue %d: failed to size receive buffer to %d bytes: %w", cfg.Queue, q.cfg.ReadBuffer, err)
	}
	q.nf = nf
	q.setVerdict = func(id uint32, v int, mark uint32, setMark bool) error {
		if setMark {
			// NFQA_MARK in a verdict sets skb->mark (nfqnl_recv_verdict);
			// the packet then goes on to the next table's hook, not the
			// rest of the queueing chain.
			return nf.SetVerdictWithOption(id, v, nfqueue.WithMark(mark))
		}
		return nf.SetVerdict(id, v)
	}
	return q, nil
}

// readBufferFor sizes a receive buffer for n queued packets of copyRange
// bytes. The kernel charges each message the truesize of its skb, not its
// length: measured on Linux 6.18, a 256-byte copy costs about 830 bytes
// (the default 208 KiB buffer held 256 of them). copyRange + 512 per packet
// is above that, and the kernel doubles what SO_RCVBUFFORCE asks for
// (socket(7)), so n packets fit with room to spare.
func readBufferFor(n, copyRange uint32) int {
	const maxBuffer = 1 << 30 // the kernel caps SO_RCVBUFFORCE at INT_MAX/2
	return int(min(uint64(n)*(uint64(copyRange)+512), maxBuffer))
}

// setReadBuffer sets the receive buffer with SO_RCVBUFFORCE, which
// CAP_NET_ADMIN (needed for the queue anyway) lets exceed
// net.core.rmem_max. Should that fail, it falls back to SO_RCVBUF, which
// the kernel silently caps at rmem_max.
func setReadBuffer(c *netlink.Conn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	if serr == nil {
		return nil
	}
	return c.SetReadBuffer(n)
}

// Ready is closed once Run has bound the queue and packets flow to us. It
// is never closed if binding fails.
func (q *Queue) Ready() <-chan struct{} { return q.ready }

// Run binds the queue and serves packets until ctx is done: each packet is
// parsed, decided by d and given its verdict; a packet that fails to parse
// is dropped. Run returns nil once ctx is done and the socket is closed,
// which unbinds the queue (the kernel drops packets still awaiting a
// verdict), or an error if binding fails. A Queue runs at most once.
func (q *Queue) Run(ctx context.Context, d Decider) error {
	if d == nil {
		return fmt.Errorf("failed to run queue %d: no decider", q.cfg.Queue)
	}
	q.mu.Lock()
	if q.closed || q.running {
		q.mu.Unlock()
		return fmt.Errorf("failed to run queue %d: it is closed or already running", q.cfg.Queue)
	}
	q.running = true
	ctx, cancel := context.WithCancel(ctx)
	q.cancel = cancel
	q.mu.Unlock()
	defer cancel()

	// Both are read by goroutines that RegisterWithErrorFunc starts, so
	// they are set before it.
	q.decider = d
	q.runCtx.Store(&ctx)

	// RegisterWithErrorFunc unbinds any previous owner, binds the queue,
	// sets copy mode, flags and length, then starts the receive goroutine.
	if err := q.nf.RegisterWithErrorFunc(ctx, q.handle, func(err error) int { return q.readError(ctx, err) }); err != nil {
		return fmt.Errorf("failed to bind queue %d: %w", q.cfg.Queue, err)
	}
	close(q.ready)
	// The kernel reports the buffer it granted, which is double what we
	// asked for, or less if SO_RCVBUF was capped.
	rbuf, _ := q.nf.Con.ReadBuffer()
	q.log.Info("queue bound", "copy_range", q.cfg.CopyRange, "max_queue_len", q.cfg.MaxQueueLen,
		"read_buffer", rbuf, "fail_open", q.cfg.FailOpen,
		"accept_mark", fmt.Sprintf("%#x/%#x", q.cfg.AcceptMark, q.cfg.AcceptMask))

	<-ctx.Done()
	// go-nfqueue's receive goroutine sends an unbind on its way out, but
	// offers no way to wait for it; closing the socket is what makes the
	// unbind certain, since the kernel destroys a queue whose owning socket
	// is released (nfqnl_rcv_nl_event). Close waits for the goroutines.
	err := q.closeSocket()
	q.log.Info("queue unbound")
	if err != nil {
		q.log.Warn("failed to close queue socket", "err", err)
	}
	return nil
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
		if q.nf != nil {
			q.closeErr = q.nf.Close()
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
	}
}

// handle is the go-nfqueue callback. Returning non-zero would stop the
// receive loop, so it always returns 0.
func (q *Queue) handle(a nfqueue.Attribute) int {
	if a.PacketID == nil {
		// Without an id there is nothing to give a verdict to.
		q.readErrors.Add(1)
		return 0
	}
	var b []byte
	if a.Payload != nil {
		b = *a.Payload
	}
	// The kernel sends NFQA_MARK only when the mark is not 0.
	var mark uint32
	if a.Mark != nil {
		mark = *a.Mark
	}
	q.serve(*a.PacketID, mark, b)
	return 0
}

// serve decides one packet, whose mark is mark, and sends the verdict. It
// allocates nothing.
func (q *Queue) serve(id, mark uint32, b []byte) {
	q.packets.Add(1)
	d := malformedDecision
	var took time.Duration
	if err := Parse(b, &q.pkt); err != nil {
		// No log line per packet: a flood of garbage must stay cheap.
		q.malformed.Add(1)
		q.pkt = verdict.Packet{}
	} else {
		now := time.Now()
		d = q.decider.Decide(q.pkt, now)
		took = time.Since(now)
	}
	v, setMark := nfqueue.NfDrop, false
	if d.Verdict == verdict.Accept {
		v, setMark = nfqueue.NfAccept, q.cfg.AcceptMask != 0
		mark = q.acceptedMark(mark)
		q.accepted.Add(1)
	} else {
		q.dropped.Add(1)
	}
	if err := q.setVerdict(id, v, mark, setMark); err != nil {
		if n := q.verdictErrors.Add(1); logWorthy(n) {
			q.log.Warn("failed to send verdict", "err", err, "verdict_errors", n)
		}
	}
	if q.observe != nil {
		q.observe(q.pkt, d, took)
	}
}

// acceptedMark is the mark an accepted packet leaves with, given the mark
// it came with: AcceptMark within AcceptMask, the other bits untouched, so
// marks other tools set in those bits survive.
func (q *Queue) acceptedMark(old uint32) uint32 {
	return old&^q.cfg.AcceptMask | q.cfg.AcceptMark
}

// readError is go-nfqueue's ErrorFunc: it returns non-zero to stop reading.
func (q *Queue) readError(ctx context.Context, err error) int {
	if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
		return 1
	}
	if errors.Is(err, syscall.ENOBUFS) {
		// The kernel dropped messages because we read too slowly; the
		// packets themselves wait in the queue or were dropped by it. The
		// socket stays usable.
		if n := q.enobufs.Add(1); logWorthy(n) {
			q.log.Warn("kernel dropped queue messages: socket receive buffer full", "enobufs", n)
		}
		return 0
	}
	if n := q.readErrors.Add(1); logWorthy(n) {
		q.log.Warn("failed to receive from queue", "err", err, "read_errors", n)
	}
	return 0
}

// logWorthy thins out a repeating event's log lines to counts 1, 2, 4, 8,
// ...: enough to notice, too few to flood the log.
func logWorthy(n uint64) bool { return n&(n-1) == 0 }

// nfLogger passes go-nfqueue's log lines to our logger. Its errors during
// shutdown ("Stop receiving", a failed unbind on a closed socket) are
// expected and logged at debug level.
type nfLogger struct{ q *Queue }

func (l nfLogger) Debugf(format string, args ...any) {
	l.logf(slog.LevelDebug, format, args)
}

func (l nfLogger) Errorf(format string, args ...any) {
	level := slog.LevelWarn
	if ctx := l.q.runCtx.Load(); ctx != nil && (*ctx).Err() != nil {
		level = slog.LevelDebug
	}
	l.logf(level, format, args)
}

func (l nfLogger) logf(level slog.Level, format string, args []any) {
	if !l.q.log.Enabled(context.Background(), level) {
		return
	}
	l.q.log.Log(context.Background(), level, fmt.Sprintf(format, args...), "from", "go-nfqueue")
}
