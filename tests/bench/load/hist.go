package load

import "math/bits"

// Histogram counts latencies in nanoseconds in log-linear buckets: exact
// below 32 ns, then 32 buckets per power of two (≤ 3.2% relative error),
// up to 2^63 ns. It is a fixed array so the sink records a packet without
// allocating, and two histograms (the two sides of a run) merge exactly,
// which percentiles could not.
type Histogram struct {
	Counts [histBuckets]uint64
}

const (
	subBits     = 5
	subCount    = 1 << subBits
	histBuckets = (64 - subBits) * subCount
)

func bucketOf(ns int64) int {
	if ns < subCount {
		if ns < 0 {
			return 0
		}
		return int(ns)
	}
	v := uint64(ns)
	shift := bits.Len64(v) - subBits - 1
	return (shift+1)*subCount + int(v>>uint(shift)) - subCount
}

// bucketLow is the smallest value that falls in bucket i.
func bucketLow(i int) int64 {
	if i < subCount {
		return int64(i)
	}
	shift := i/subCount - 1
	return int64(i%subCount+subCount) << uint(shift)
}

// Add records one latency.
func (h *Histogram) Add(ns int64) { h.Counts[bucketOf(ns)]++ }

// Merge adds every count of o into h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.Counts {
		h.Counts[i] += c
	}
}

// Total is the number of recorded values.
func (h *Histogram) Total() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// Quantile returns the value below which a fraction q of the recorded
// values fall, as the middle of its bucket; 0 when empty.
func (h *Histogram) Quantile(q float64) int64 {
	total := h.Total()
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketLow(i), bucketLow(i+1)
			return lo + (hi-lo)/2
		}
	}
	return bucketLow(histBuckets - 1)
}

// Max returns the lower bound of the highest non-empty bucket.
func (h *Histogram) Max() int64 {
	for i := histBuckets - 1; i >= 0; i-- {
		if h.Counts[i] != 0 {
			return bucketLow(i)
		}
	}
	return 0
}

// Sparse returns the non-empty buckets as [index, count] pairs, the form
// carried in a Result.
func (h *Histogram) Sparse() [][2]uint64 {
	var out [][2]uint64
	for i, c := range h.Counts {
		if c != 0 {
			out = append(out, [2]uint64{uint64(i), c})
		}
	}
	return out
}

// AddSparse adds pairs produced by Sparse; out-of-range indexes are ignored.
func (h *Histogram) AddSparse(pairs [][2]uint64) {
	for _, p := range pairs {
		if p[0] < histBuckets {
			h.Counts[p[0]] += p[1]
		}
	}
}
