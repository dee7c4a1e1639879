package verdict

import (
	"net/netip"
	"testing"
)

// The table must agree with a Go map under any mix of inserts and deletes,
// including the wrap-around at the end of the slot array.
func TestTableMatchesMap(t *testing.T) {
	for _, max := range []int{1, 3, 16, 1000} {
		tb := newTable[int](max, uint64(max)*7919)
		ref := map[key]int{}
		x := uint64(max)
		for i := 0; i < 200_000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
			k := key{hi: x >> 60, lo: (x >> 40) & 0xff, door: uint32(x>>20) & 3}
			switch {
			case x>>10&3 == 0:
				if tb.delete(k) != (func() bool { _, ok := ref[k]; return ok })() {
					t.Fatalf("max %d op %d: delete disagrees", max, i)
				}
				delete(ref, k)
			case tb.get(k) != nil:
				*tb.get(k) = i
				ref[k] = i
			case !tb.full():
				*tb.insert(k) = i
				ref[k] = i
			}
			if i%97 == 0 {
				tb.sweep(func(k key, v *int) bool {
					if *v%5 == 0 {
						delete(ref, k)
						return true
					}
					return false
				})
			}
			if tb.n != len(ref) {
				t.Fatalf("max %d op %d: table has %d, map %d", max, i, tb.n, len(ref))
			}
		}
		for k, v := range ref {
			if got := tb.get(k); got == nil || *got != v {
				t.Fatalf("max %d: key %v: got %v, want %d", max, k, got, v)
			}
		}
	}
}

func TestKeyAddrRoundTrip(t *testing.T) {
	for _, s := range []string{"198.51.100.10", "2001:db8::1", "::1", "0.0.0.0", "255.255.255.255"} {
		a := netip.MustParseAddr(s)
		if got := keyOf(a, 3).addr(); got != a {
			t.Errorf("%s: round trip gave %s", s, got)
		}
	}
}

// evict removes the worst entry of its sample; in a table smaller than the
// sample, that is the worst entry of all, wherever the scan starts.
func TestTableEvict(t *testing.T) {
	for start := uint64(0); start < 16; start++ {
		tb := newTable[int](4, 99)
		for i := 1; i <= 4; i++ {
			*tb.insert(key{lo: uint64(i)}) = i * 10
		}
		tb.evict(start, func(v *int) uint64 { return uint64(*v) })
		if tb.n != 3 || tb.get(key{lo: 1}) != nil {
			t.Fatalf("start %d: the entry of value 10 survived, or more went (n=%d)", start, tb.n)
		}
	}
}
