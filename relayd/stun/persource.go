package stun

import (
	"net/netip"
	"time"
)

// sourceShare: with a response cap, each source may have at most
// 1/sourceShare of it (at least one answer a second), so one flooder uses
// up only its own share and other callers are still answered.
const sourceShare = 10

// maxSources bounds the per-source table: 32 bytes an entry plus the
// map's overhead, about 300 kB however many sources a spoofer rotates
// through (TestSourceTableBounded measures it).
const maxSources = 4096

// sourceKey identifies a source: an IPv4 address, or an IPv6 /64 (one
// host commonly holds a whole /64 and can send from any address in it).
type sourceKey [16]byte

func keyOf(a netip.Addr) sourceKey {
	a = a.Unmap()
	k := sourceKey(a.As16())
	if !a.Is4() {
		clear(k[8:])
	}
	return k
}

// bucket is one source's token bucket.
type bucket struct {
	tokens float64
	last   time.Duration // when tokens was computed, since sourceLimiter.epoch
}

// sourceLimiter gives each source a token bucket of rate answers a second
// with a burst of twice as many. Its table holds at most maxSources
// entries. When full, sources whose bucket has refilled are forgotten
// (forgetting a full bucket loses nothing), and if that frees too little
// arbitrary ones go too, down to three quarters of the bound: each sweep
// is paid for by a quarter of the bound's insertions. A forgotten flooder starts again
// with a full burst: the global cap still bounds what a spoofer rotating
// through sources gets. Not safe for concurrent use (Serve's goroutine
// owns it).
type sourceLimiter struct {
	rate, burst float64
	max         int
	epoch       time.Time
	table       map[sourceKey]bucket
}

func newSourceLimiter(perSecond float64, max int, epoch time.Time) *sourceLimiter {
	return &sourceLimiter{rate: perSecond, burst: 2 * perSecond, max: max, epoch: epoch,
		table: make(map[sourceKey]bucket, max)}
}

// allow takes a token from src's bucket at now, reporting whether there
// was one.
func (l *sourceLimiter) allow(src netip.Addr, now time.Time) bool {
	k, t := keyOf(src), now.Sub(l.epoch)
	b, ok := l.table[k]
	if ok {
		b = l.refill(b, t)
	} else {
		if len(l.table) >= l.max {
			l.makeRoom(t)
		}
		b = bucket{tokens: l.burst, last: t}
	}
	allowed := b.tokens >= 1
	if allowed {
		b.tokens--
	}
	l.table[k] = b
	return allowed
}

func (l *sourceLimiter) refill(b bucket, t time.Duration) bucket {
	if t > b.last {
		b.tokens = min(l.burst, b.tokens+(t-b.last).Seconds()*l.rate)
		b.last = t
	}
	return b
}

// makeRoom forgets refilled sources, then arbitrary ones, until the table
// is at most three quarters full. The survivors move to a new map, so
// what deleted entries leave behind in the old one is freed.
func (l *sourceLimiter) makeRoom(t time.Duration) {
	keep := make(map[sourceKey]bucket, l.max)
	for k, b := range l.table { // map order: arbitrary
		if len(keep) >= l.max*3/4 {
			break
		}
		if l.refill(b, t).tokens < l.burst {
			keep[k] = b
		}
	}
	l.table = keep
}

// size is the number of sources tracked.
func (l *sourceLimiter) size() int { return len(l.table) }
