// Package nfqstat reads the kernel's table of bound netfilter queues,
// /proc/net/netfilter/nfnetlink_queue: how many packets wait in each
// queue for a verdict and how many the kernel dropped. The metrics
// endpoint reports it and the benchmarks measure with it.
package nfqstat

import (
	"bytes"
	"io"
	"os"
	"strconv"
	"strings"
)

// Path is where the kernel lists the netfilter queues of the reader's
// network namespace; /proc/PID/net/netfilter/nfnetlink_queue lists those
// of PID's.
const Path = "/proc/net/netfilter/nfnetlink_queue"

// Queue is one line of the table.
type Queue struct {
	Number      uint16 // queue_number
	PortID      uint32 // peer_portid: the netlink port of the bound socket
	Total       uint64 // queue_total: packets waiting for a verdict
	CopyMode    uint64 // copy_mode
	CopyRange   uint64 // copy_range
	Dropped     uint64 // queue_dropped: not queued because the queue was full
	UserDropped uint64 // queue_user_dropped: not delivered to the socket (its buffer was full)
	IDSequence  uint64 // id_sequence: the last packet id handed out
}

// maxSize bounds what Read reads: a line is under 64 bytes and there are
// at most 65536 queues.
const maxSize = 8 << 20

// BadLinesError reports a table with lines that did not parse; the lines
// that did are still returned.
type BadLinesError int

func (e BadLinesError) Error() string {
	return strconv.Itoa(int(e)) + " lines of the queue status file could not be parsed"
}

// Read reads and parses the table at path. On error it returns whatever
// it could parse.
func Read(path string) ([]Queue, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSize))
	if err != nil {
		return nil, err
	}
	qs, bad := Parse(string(data))
	if bad > 0 {
		return qs, BadLinesError(bad)
	}
	return qs, nil
}

// Parse parses the table, which nfnetlink_queue.c writes one line per
// bound queue with
//
//	"%5u %6u %5u %1u %5u %5u %5u %8u %2d\n"
//
// for queue_number, peer_portid, queue_total, copy_mode, copy_range,
// queue_dropped, queue_user_dropped, id_sequence and a constant 1. It
// needs the first eight fields as unsigned numbers and ignores any after
// them, so that a kernel adding a column does not blind us. Blank lines are
// skipped; other lines that do not parse, and repeats of a queue already
// seen (which would make a metrics scrape fail on duplicate series), are
// counted in bad.
func Parse(data string) (qs []Queue, bad int) {
	var seen map[uint16]bool
	for line := range strings.Lines(data) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		var n [8]uint64
		ok := len(f) >= len(n)
		for i := 0; ok && i < len(n); i++ {
			bits := 32 // u32 in the kernel
			if i == 0 {
				bits = 16 // queue numbers are 16 bits in NFQA_CFG_CMD
			}
			var err error
			n[i], err = strconv.ParseUint(f[i], 10, bits)
			ok = err == nil
		}
		q := uint16(n[0])
		if !ok || seen[q] {
			bad++
			continue
		}
		if seen == nil {
			seen = make(map[uint16]bool)
		}
		seen[q] = true
		qs = append(qs, Queue{Number: q, PortID: uint32(n[1]), Total: n[2], CopyMode: n[3], CopyRange: n[4],
			Dropped: n[5], UserDropped: n[6], IDSequence: n[7]})
	}
	return qs, bad
}

// Totals sets totals[q] to the queue_total of each queue q in
// 0..len(totals)-1 found in the table b, without allocating: it is read in
// a loop while a queue drains, where Parse's allocations would cost the
// poll its resolution. It reports whether every one of those queues was
// there. It trusts the kernel's format and checks nothing else.
func Totals(b []byte, totals []uint64) bool {
	var seen uint64
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		var f [3]uint64
		k := 0
		for j := 0; j < len(line) && k < 3; {
			for j < len(line) && line[j] == ' ' {
				j++
			}
			if j == len(line) {
				break
			}
			var v uint64
			for j < len(line) && line[j] >= '0' && line[j] <= '9' {
				v = v*10 + uint64(line[j]-'0')
				j++
			}
			f[k] = v
			k++
			for j < len(line) && line[j] != ' ' {
				j++
			}
		}
		if k == 3 && f[0] < uint64(len(totals)) {
			totals[f[0]] = f[2]
			seen |= 1 << f[0]
		}
	}
	return seen == 1<<len(totals)-1
}
