package nfqstat

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	real, err := os.ReadFile("testdata/nfnetlink_queue")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		in   string
		want []Queue
		bad  int
	}{
		{name: "empty", in: ""},
		{name: "blank lines", in: "\n  \n\t\n"},
		{
			name: "real",
			in:   string(real),
			want: []Queue{
				{Number: 0, PortID: 31337, Total: 3, CopyMode: 2, CopyRange: 256, IDSequence: 1042},
				{Number: 1, PortID: 31338, CopyMode: 2, CopyRange: 256, Dropped: 7, UserDropped: 12, IDSequence: 4294967295},
				{Number: 5, PortID: 812, Total: 4096, CopyMode: 2, CopyRange: 65531, Dropped: 123456, UserDropped: 9, IDSequence: 77},
			},
		},
		{
			name: "no trailing newline, tabs, CRLF",
			in:   "2\t9\t1\t2\t256\t3\t4\t5\t1\r\n3 9 8 2 256 7 6 5 1",
			want: []Queue{
				{Number: 2, PortID: 9, Total: 1, CopyMode: 2, CopyRange: 256, Dropped: 3, UserDropped: 4, IDSequence: 5},
				{Number: 3, PortID: 9, Total: 8, CopyMode: 2, CopyRange: 256, Dropped: 7, UserDropped: 6, IDSequence: 5},
			},
		},
		{
			name: "extra columns are ignored, eight are enough",
			in:   "4 1 2 2 256 3 4 5 1 99 100\n6 1 2 2 256 3 4 5\n",
			want: []Queue{
				{Number: 4, PortID: 1, Total: 2, CopyMode: 2, CopyRange: 256, Dropped: 3, UserDropped: 4, IDSequence: 5},
				{Number: 6, PortID: 1, Total: 2, CopyMode: 2, CopyRange: 256, Dropped: 3, UserDropped: 4, IDSequence: 5},
			},
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
			want: []Queue{{Number: 0, PortID: 31337, Total: 3, CopyMode: 2, CopyRange: 256, IDSequence: 1042}},
			bad:  9,
		},
		{
			name: "largest values",
			in:   "65535 4294967295 4294967295 2 65535 4294967295 4294967295 4294967295 1\n",
			want: []Queue{{Number: 65535, PortID: 1<<32 - 1, Total: 1<<32 - 1, CopyMode: 2, CopyRange: 65535, Dropped: 1<<32 - 1, UserDropped: 1<<32 - 1, IDSequence: 1<<32 - 1}},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, bad := Parse(tt.in)
			if !reflect.DeepEqual(got, tt.want) || bad != tt.bad {
				t.Errorf("Parse() = %+v, %d bad; want %+v, %d bad", got, bad, tt.want, tt.bad)
			}
		})
	}
}

func TestRead(t *testing.T) {
	if _, err := Read("testdata/does-not-exist"); err == nil {
		t.Error("missing file: no error")
	}
	path := t.TempDir() + "/q"
	if err := os.WriteFile(path, []byte("0 1 2 2 256 0 0 1 1\nnonsense\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	qs, err := Read(path)
	if err == nil || len(qs) != 1 {
		t.Errorf("Read() = %v, %v; want one queue and an error for the bad line", qs, err)
	}
}

func FuzzParse(f *testing.F) {
	if real, err := os.ReadFile("testdata/nfnetlink_queue"); err == nil {
		f.Add(string(real))
	}
	f.Fuzz(func(t *testing.T, in string) {
		qs, bad := Parse(in)
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
			if seen[q.Number] {
				t.Fatalf("queue %d returned twice", q.Number)
			}
			seen[q.Number] = true
		}
		// What was parsed, written back in the kernel's format, parses to
		// the same.
		var b strings.Builder
		for _, q := range qs {
			fmt.Fprintf(&b, "%5d %6d %5d %1d %5d %5d %5d %8d %2d\n", q.Number, q.PortID, q.Total, q.CopyMode, q.CopyRange, q.Dropped, q.UserDropped, q.IDSequence, 1)
		}
		again, bad := Parse(b.String())
		if bad != 0 || !reflect.DeepEqual(again, qs) {
			t.Fatalf("round trip: %+v (%d bad), want %+v", again, bad, qs)
		}
	})
}

func TestTotals(t *testing.T) {
	table := []byte("    0   1234 15000 2 256     0     0    15000  1\n" +
		"    1   1235     7 2 256     3     1    20000  1\n" +
		"    9   4321    99 2 256     0     0        5  1\n")
	totals := make([]uint64, 2)
	if !Totals(table, totals) {
		t.Fatal("queues 0 and 1 not found")
	}
	if totals[0] != 15000 || totals[1] != 7 {
		t.Fatalf("totals %v, want [15000 7]", totals)
	}
	if Totals(table[:48], totals) {
		t.Fatal("queue 1 reported present in a table without it")
	}
	if n := testing.AllocsPerRun(100, func() { Totals(table, totals) }); n != 0 {
		t.Fatalf("%v allocations per parse", n)
	}
}
