package gate

import (
	"encoding/binary"
	"errors"
)

// The nfnetlink_queue wire format: include/uapi/linux/netlink.h,
// netfilter/nfnetlink.h and netfilter/nfnetlink_queue.h. The per-packet
// path reads and writes these bytes in place, in buffers it reuses, so it
// allocates nothing; go-nfqueue decodes every message into fresh maps and
// pointers, and that (with two system calls per receive) was most of its
// cost per packet.
const (
	nlmsgHeaderLen = 16 // struct nlmsghdr
	nfgenLen       = 4  // struct nfgenmsg
	nlaHeaderLen   = 4  // struct nlattr

	nlmsgError = 2 // NLMSG_ERROR
	nlmsgDone  = 3 // NLMSG_DONE

	nlmFRequest = 0x1 // NLM_F_REQUEST
	nlmFAck     = 0x4 // NLM_F_ACK

	nlaTypeMask = 0x3fff // strips NLA_F_NESTED and NLA_F_NET_BYTEORDER

	nfnlSubsysQueue = 3 // NFNL_SUBSYS_QUEUE

	nfqnlMsgPacket       = nfnlSubsysQueue << 8   // NFQNL_MSG_PACKET (0)
	nfqnlMsgVerdict      = nfnlSubsysQueue<<8 | 1 // NFQNL_MSG_VERDICT
	nfqnlMsgConfig       = nfnlSubsysQueue<<8 | 2 // NFQNL_MSG_CONFIG
	nfqnlMsgVerdictBatch = nfnlSubsysQueue<<8 | 3 // NFQNL_MSG_VERDICT_BATCH

	// Packet and verdict attributes (enum nfqnl_attr_type).
	nfqaPacketHdr  = 1
	nfqaVerdictHdr = 2
	nfqaMark       = 3
	nfqaPayload    = 10

	// Config attributes (enum nfqnl_attr_config).
	nfqaCfgCmd         = 1
	nfqaCfgParams      = 2
	nfqaCfgQueueMaxLen = 3
	nfqaCfgMask        = 4
	nfqaCfgFlags       = 5

	nfqnlCfgCmdBind = 1 // NFQNL_CFG_CMD_BIND
	nfqnlCopyPacket = 2 // NFQNL_COPY_PACKET

	nfqaCfgFFailOpen = 0x1 // NFQA_CFG_F_FAIL_OPEN

	// Netfilter verdicts (NF_DROP, NF_ACCEPT).
	nfDrop   = 0
	nfAccept = 1

	// verdictMsgLen is a verdict message without a mark, markedMsgLen one
	// with NFQA_MARK.
	verdictMsgLen = nlmsgHeaderLen + nfgenLen + nlaHeaderLen + 8
	markedMsgLen  = verdictMsgLen + nlaHeaderLen + 4
)

// nlAlign rounds n up to netlink's 4-byte alignment (NLMSG_ALIGN, NLA_ALIGN).
func nlAlign(n int) int { return (n + 3) &^ 3 }

// Netlink headers are in the host's byte order; nfnetlink_queue's attribute
// payloads are big-endian.
var native = binary.NativeEndian

// packetMsg is what the gate needs of one NFQNL_MSG_PACKET.
type packetMsg struct {
	id      uint32
	mark    uint32 // 0 when the kernel sent no NFQA_MARK, as it does for mark 0
	payload []byte // aliases the receive buffer
	hasID   bool
}

// Why a message in a receive buffer was not a packet.
var (
	errShortMessage = errors.New("netlink message shorter than its header says")
	errShortAttr    = errors.New("netlink attribute runs past its message")
	errNoPacketID   = errors.New("queued packet message without a packet id")
)

// nextMessage splits the first netlink message off b: its type, body
// (after the nlmsghdr) and the rest of b. A datagram from the
// kernel normally holds one message, but nothing in netlink promises that.
// A truncated datagram (cut to fit the receive buffer) yields what it holds
// of its message, so that the packet id at its start can still be read.
func nextMessage(b []byte, truncated bool) (typ uint16, body, rest []byte, err error) {
	if len(b) < nlmsgHeaderLen {
		return 0, nil, nil, errShortMessage
	}
	n := int(native.Uint32(b[0:4]))
	if truncated && n > len(b) {
		n = len(b)
	}
	if n < nlmsgHeaderLen || n > len(b) {
		return 0, nil, nil, errShortMessage
	}
	typ = native.Uint16(b[4:6])
	body = b[nlmsgHeaderLen:n]
	if a := nlAlign(n); a < len(b) {
		rest = b[a:]
	}
	return typ, body, rest, nil
}

// parsePacket reads the id, mark and payload of an NFQNL_MSG_PACKET body
// (the nfgenmsg and the attributes after it) without copying anything.
func parsePacket(body []byte, m *packetMsg) error {
	*m = packetMsg{}
	if len(body) < nfgenLen {
		return errShortMessage
	}
	b := body[nfgenLen:]
	for len(b) >= nlaHeaderLen {
		n := int(native.Uint16(b[0:2]))
		if n < nlaHeaderLen || n > len(b) {
			return errShortAttr
		}
		data := b[nlaHeaderLen:n]
		switch native.Uint16(b[2:4]) & nlaTypeMask {
		case nfqaPacketHdr:
			// struct nfqnl_msg_packet_hdr: __be32 packet_id, __be16
			// hw_protocol, __u8 hook.
			if len(data) < 4 {
				return errShortAttr
			}
			m.id, m.hasID = binary.BigEndian.Uint32(data), true
		case nfqaMark:
			if len(data) < 4 {
				return errShortAttr
			}
			m.mark = binary.BigEndian.Uint32(data)
		case nfqaPayload:
			m.payload = data
		}
		a := nlAlign(n)
		if a >= len(b) {
			break
		}
		b = b[a:]
	}
	if !m.hasID {
		return errNoPacketID
	}
	return nil
}

// parseErrorMsg reads an NLMSG_ERROR body: the errno the kernel reports (0
// for an acknowledgement, else negative) and the sequence number of the
// request it answers.
func parseErrorMsg(body []byte) (errno int32, seq uint32, ok bool) {
	// struct nlmsgerr: int error, then the request's nlmsghdr.
	if len(body) < 4+nlmsgHeaderLen {
		return 0, 0, false
	}
	return int32(native.Uint32(body[0:4])), native.Uint32(body[4+8 : 4+12]), true
}

// putHeader writes an nlmsghdr and an nfgenmsg for queue at b[0:20].
func putHeader(b []byte, length int, typ uint16, flags uint16, seq uint32, queue uint16) {
	native.PutUint32(b[0:4], uint32(length))
	native.PutUint16(b[4:6], typ)
	native.PutUint16(b[6:8], flags)
	native.PutUint32(b[8:12], seq)
	native.PutUint32(b[12:16], 0) // the kernel is port 0
	b[16] = 0                     // AF_UNSPEC: queues serve every family since Linux 3.8
	b[17] = 0                     // NFNETLINK_V0
	binary.BigEndian.PutUint16(b[18:20], queue)
}

// putAttr writes an attribute header at b[0:4] for a payload of n bytes.
func putAttr(b []byte, typ uint16, n int) {
	native.PutUint16(b[0:2], uint16(nlaHeaderLen+n))
	native.PutUint16(b[2:4], typ)
}

// appendVerdict appends one verdict message for packet id to b: NF_ACCEPT
// or NF_DROP, and with setMark the packet's new mark. With batch it is an
// NFQNL_MSG_VERDICT_BATCH, which gives the verdict to every packet of the
// queue whose id is not after id.
func appendVerdict(b []byte, queue uint16, id uint32, v uint32, mark uint32, setMark, batch bool) []byte {
	n := verdictMsgLen
	if setMark {
		n = markedMsgLen
	}
	start := len(b)
	b = append(b, make([]byte, n)...) // does not allocate once b has grown
	m := b[start:]
	typ := uint16(nfqnlMsgVerdict)
	if batch {
		typ = nfqnlMsgVerdictBatch
	}
	putHeader(m, n, typ, nlmFRequest, 0, queue)
	// struct nfqnl_msg_verdict_hdr: __be32 verdict, __be32 id.
	putAttr(m[20:], nfqaVerdictHdr, 8)
	binary.BigEndian.PutUint32(m[24:28], v)
	binary.BigEndian.PutUint32(m[28:32], id)
	if setMark {
		putAttr(m[32:], nfqaMark, 4)
		binary.BigEndian.PutUint32(m[36:40], mark)
	}
	return b
}

// configMsg is the one NFQNL_MSG_CONFIG that binds queue and sets it up.
// The kernel handles its attributes in a fixed order whatever their order
// here (nfqnl_recv_config): the bind command first, which creates the
// queue, then copy mode and range, length and flags. One message means
// one acknowledgement to wait for, and no window in which the queue is
// bound with the kernel's defaults (copying no payload) that a second
// message would have to close.
func configMsg(queue uint16, seq uint32, copyRange, maxLen, flags uint32) []byte {
	const (
		cmdLen    = nlaHeaderLen + 4 // struct nfqnl_msg_config_cmd: u8 command, u8 pad, __be16 pf
		paramsLen = nlaHeaderLen + 8 // struct nfqnl_msg_config_params: __be32 copy_range, u8 copy_mode (padded)
		u32Len    = nlaHeaderLen + 4
		n         = nlmsgHeaderLen + nfgenLen + cmdLen + paramsLen + 3*u32Len
	)
	b := make([]byte, n)
	putHeader(b, n, nfqnlMsgConfig, nlmFRequest|nlmFAck, seq, queue)
	a := b[20:]
	putAttr(a, nfqaCfgCmd, 4)
	a[4] = nfqnlCfgCmdBind // pf 0: ignored since Linux 3.8
	a = a[cmdLen:]
	putAttr(a, nfqaCfgParams, 5)
	binary.BigEndian.PutUint32(a[4:8], copyRange)
	a[8] = nfqnlCopyPacket
	a = a[paramsLen:]
	putAttr(a, nfqaCfgQueueMaxLen, 4)
	binary.BigEndian.PutUint32(a[4:8], maxLen)
	a = a[u32Len:]
	// The mask says which flags this message sets; the flags, to what.
	putAttr(a, nfqaCfgMask, 4)
	binary.BigEndian.PutUint32(a[4:8], nfqaCfgFFailOpen)
	a = a[u32Len:]
	putAttr(a, nfqaCfgFlags, 4)
	binary.BigEndian.PutUint32(a[4:8], flags)
	return b
}
