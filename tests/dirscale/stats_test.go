package dirscale

import (
	"fmt"
	"slices"
	"time"
)

// durations are timed samples.
type durations []time.Duration

// quantile is the q-quantile (nearest rank) of the samples, 0 when none.
func (d durations) quantile(q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// String is "p50 X, p99 Y, max Z (n samples)".
func (d durations) String() string {
	return fmt.Sprintf("p50 %s, p99 %s, max %s (%d samples)", ms(d.quantile(0.5)), ms(d.quantile(0.99)), ms(d.quantile(1)), len(d))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
