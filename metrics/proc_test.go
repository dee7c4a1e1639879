package metrics

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestParseProcQueues(t *testing.T) {
	real, err := os.ReadFile("testdata/nfnetlink_queue")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		in   string
		want []procQueue
		bad  int
	}{
		{name: "empty", in: ""},
		{name: "blank lines", in: "\n  \n\t\n"},
		{
			name: "real",
			in:   string(real),
			want: []procQueue{
				{queue: 0, length: 3},
				{queue: 1, dropped: 7, userDropped: 12},
				{queue: 5, length: 4096, dropped: 123456, userDropped: 9},
			},
		},
		{
			name: "no trailing newline, tabs, CRLF",
			in:   "2\t9\t1\t2\t256\t3\t4\t5\t1\r\n3 9 8 2 256 7 6 5 1",
			want: []procQueue{{queue: 2, length: 1, dropped: 3, userDropped: 4}, {queue: 3, length: 8, dropped: 7, userDropped: 6}},
		},
		{
			name: "extra columns are ignored, eight are enough",
			in:   "4 1 2 2 256 3 4 5 1 99 100\n6 1 2 2 256 3 4 5\n",
			want: []procQueue{{queue: 4, length: 2, dropped: 3, userDropped: 4}, {queue: 6, length: 2, dropped: 3, userDropped: 4}},
		},
		{
			name: "garbage among good lines",
			in: "queue_number peer_portid queue_total copy_mode\n" +
				"    0  31337     3 2   256     0     0     1042  1\n" +
				"    1  31338     0 2\n" + // truncated
				"   -1  31338     0 2   256     0     0       1  1\n" + // negative
				"65536     1     0 2   256     0     0       1  1\n" + // queue past 16 bits
				"    2     1 4294967296 2 256   0     0       1  1\n" + // past 32 bits
				"    3     1   0x1 2   256     0     0       1  1\n" + // not decimal
				"    4     1     1 2   256     0  +5         1  1\n" + // signed
				"\x00\xff\xfe\n" +
				"    0     1     9 2   256     0     0       1  1\n", // queue 0 again
			want: []procQueue{{queue: 0, length: 3}},
			bad:  9,
		},
		{
			name: "largest values",
			in:   "65535 4294967295 4294967295 2 65535 4294967295 4294967295 4294967295 1\n",
			want: []procQueue{{queue: 65535, length: 1<<32 - 1, dropped: 1<<32 - 1, userDropped: 1<<32 - 1}},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, bad := parseProcQueues(tt.in)
			if !reflect.DeepEqual(got, tt.want) || bad != tt.bad {
				t.Errorf("parseProcQueues() = %+v, %d bad; want %+v, %d bad", got, bad, tt.want, tt.bad)
			}
		})
	}
}

func TestReadProcQueues(t *testing.T) {
	if _, err := readProcQueues("testdata/does-not-exist"); err == nil {
		t.Error("missing file: no error")
	}
	path := t.TempDir() + "/q"
	if err := os.WriteFile(path, []byte("0 1 2 2 256 0 0 1 1\nnonsense\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	qs, err := readProcQueues(path)
	if err == nil || len(qs) != 1 {
		t.Errorf("readProcQueues() = %v, %v; want one queue and an error for the bad line", qs, err)
	}
}

func FuzzParseProcQueues(f *testing.F) {
	if real, err := os.ReadFile("testdata/nfnetlink_queue"); err == nil {
		f.Add(string(real))
	}
	f.Fuzz(func(t *testing.T, in string) {
		qs, bad := parseProcQueues(in)
		lines := 0
		for l := range strings.Lines(in) {
			if strings.TrimSpace(l) != "" {
				lines++
			}
		}
		if bad < 0 || len(qs)+bad != lines {
			t.Fatalf("%d queues + %d bad lines != %d lines", len(qs), bad, lines)
		}
		// Queues are unique: a repeat would fail the whole scrape.
		seen := map[uint16]bool{}
		for _, q := range qs {
			if seen[q.queue] {
				t.Fatalf("queue %d returned twice", q.queue)
			}
			seen[q.queue] = true
		}
		// What was parsed, written back in the kernel's format, parses to
		// the same.
		var b strings.Builder
		for _, q := range qs {
			fmt.Fprintf(&b, "%5d %6d %5d %1d %5d %5d %5d %8d %2d\n", q.queue, 0, q.length, 2, 256, q.dropped, q.userDropped, 0, 1)
		}
		again, bad := parseProcQueues(b.String())
		if bad != 0 || !reflect.DeepEqual(again, qs) {
			t.Fatalf("round trip: %+v (%d bad), want %+v", again, bad, qs)
		}
	})
}
