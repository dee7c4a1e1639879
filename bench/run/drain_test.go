package main

import "testing"

func TestQueueTotals(t *testing.T) {
	table := []byte("    0   1234 15000 2 256     0     0    15000  1\n" +
		"    1   1235     7 2 256     3     1    20000  1\n" +
		"    9   4321    99 2 256     0     0        5  1\n")
	totals := make([]uint64, 2)
	if !queueTotals(table, totals) {
		t.Fatal("queues 0 and 1 not found")
	}
	if totals[0] != 15000 || totals[1] != 7 {
		t.Fatalf("totals %v, want [15000 7]", totals)
	}
	if queueTotals(table[:48], totals) {
		t.Fatal("queue 1 reported present in a table without it")
	}
	if n := testing.AllocsPerRun(100, func() { queueTotals(table, totals) }); n != 0 {
		t.Fatalf("%v allocations per parse", n)
	}
}
