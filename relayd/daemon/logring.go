package daemon

import (
	"bytes"
	"sync"
)

// LogRing keeps the last lines written to it (an io.Writer placed beside
// stderr), so recent logs can be read through the API without touching
// flash.
type LogRing struct {
	mu      sync.Mutex
	lines   []string
	next    int
	full    bool
	partial []byte
}

// NewLogRing keeps up to n lines.
func NewLogRing(n int) *LogRing { return &LogRing{lines: make([]string, max(n, 1))} }

// Write stores complete lines; a trailing partial line waits for its end.
func (r *LogRing) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	data := append(r.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		r.lines[r.next] = string(data[:i])
		r.next = (r.next + 1) % len(r.lines)
		if r.next == 0 {
			r.full = true
		}
		data = data[i+1:]
	}
	// Bound a runaway line without newline.
	if len(data) > 64<<10 {
		data = data[:0]
	}
	r.partial = append(r.partial[:0], data...)
	return len(p), nil
}

// Last returns up to n most recent lines, oldest first.
func (r *LogRing) Last(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	count := r.next
	if r.full {
		count = len(r.lines)
	}
	n = min(max(n, 0), count)
	out := make([]string, 0, n)
	for i := count - n; i < count; i++ {
		j := i
		if r.full {
			j = (r.next + i) % len(r.lines)
		}
		out = append(out, r.lines[j])
	}
	return out
}
