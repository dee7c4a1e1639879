package verdict

import (
	"math"
	"time"
)

// maxNanos bounds the engine's clock either side of its epoch (146 years):
// the difference of two engine times, which the timeouts compare, then
// never overflows, however far the clock is stepped.
const maxNanos = math.MaxInt64 / 2

// nanos is now on the engine's clock: nanoseconds since the epoch, within
// ±maxNanos.
func (e *Engine) nanos(now time.Time) int64 {
	return min(max(int64(now.Sub(e.epoch)), -maxNanos), maxNanos)
}

// addSat is the deadline t + d, saturated at the end of time: a duration
// as long as Go holds must never overflow a deadline into the past, where
// a ban or a used SPA packet would already be over. Every deadline the
// engine computes from a time and a duration goes through it.
func addSat(t, d int64) int64 {
	if d > 0 && t > math.MaxInt64-d {
		return math.MaxInt64
	}
	return t + d
}
