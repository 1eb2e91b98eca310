package usage

import (
	"sync"
	"time"
)

// LiveMinutes is how many minutes of live call counts are kept.
const LiveMinutes = 60

// LiveMinute is the most calls live at once in one minute, Ago minutes
// before the current one (0 = the current minute, still running).
type LiveMinute struct {
	Ago int `json:"minutes_ago"`
	Max int `json:"max"`
}

// Live keeps the most calls live at once in each of the last LiveMinutes
// minutes, in memory only (a restart starts it again). Minutes are
// counted on the monotonic clock from the first record, so a wall clock
// step does not reorder them. Safe for concurrent use.
type Live struct {
	now func() time.Time

	mu      sync.Mutex
	started time.Time
	minute  [LiveMinutes]int64 // the minute (since started) each slot holds; -1 = none yet
	max     [LiveMinutes]int
}

// NewLive returns an empty record; now is the clock (nil = time.Now).
func NewLive(now func() time.Time) *Live {
	if now == nil {
		now = time.Now
	}
	l := &Live{now: now, started: now()}
	for i := range l.minute {
		l.minute[i] = -1
	}
	return l
}

// current is the minute now falls in, counted from the start.
func (l *Live) current() int64 {
	return int64(l.now().Sub(l.started) / time.Minute)
}

// Record notes that n calls are live now.
func (l *Live) Record(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.current()
	i := m % LiveMinutes
	if l.minute[i] != m {
		l.minute[i], l.max[i] = m, n
		return
	}
	l.max[i] = max(l.max[i], n)
}

// Minutes returns the recorded minutes of the last LiveMinutes, oldest
// first; minutes without a record (before the start) are left out.
func (l *Live) Minutes() []LiveMinute {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.current()
	out := make([]LiveMinute, 0, LiveMinutes)
	for m := cur - LiveMinutes + 1; m <= cur; m++ {
		if m < 0 {
			continue
		}
		if i := m % LiveMinutes; l.minute[i] == m {
			out = append(out, LiveMinute{Ago: int(cur - m), Max: l.max[i]})
		}
	}
	return out
}
