package turn

import (
	"net/netip"
	"sync"
	"time"
)

// A STUN answer without MESSAGE-INTEGRITY (a 401 to an unauthenticated
// request, a 400 or 438 to a request with a forged integrity attribute, a
// Binding success, a 437 or 508) can go to a forged source: the relay
// would then send a stranger more than the forger sent. pion answers a
// 20-byte Allocate with a 401 of 60 bytes plus the realm (68 with
// "jnrelay"), a 20-byte Binding with 40 bytes (52 to IPv6). So the UDP
// listening socket keeps, per source (sourceKey), a budget of answer
// bytes: every byte of STUN the source sent adds one, every unprotected
// answer spends its size, and an answer the budget cannot pay is dropped
// (counted as RefusedAmplification). A source starts with an allowance
// (answerAllowance), enough for a real client's first Allocate to get its
// 401 at once, and gets it back only after allowanceQuiet without sending: a
// flood never does, so asymptotically it gets no more bytes than it
// sends. Answers with MESSAGE-INTEGRITY (an allocation's success
// responses) need the key of a credential, and are not counted.
const (
	minAnswerAllowance = 256 // two 401s for a realm of up to 60 bytes
	allowanceQuiet     = 20 * time.Second
	maxAnswerCredit    = 4096 // what a source can bank from large requests
)

// answerAllowance is the allowance of a server of realm: two of its 401s
// (20 bytes of header, ERROR-CODE 8, NONCE 28, REALM 4 and the realm
// padded to 4), and at least minAnswerAllowance.
func answerAllowance(realm string) int {
	return max(minAnswerAllowance, 2*(60+(len(realm)+3)&^3))
}

// answerBudget is the per-source table of answer credit. Like the rate
// limiter's, it is bounded at maxSources and restarts when full.
type answerBudget struct {
	allowance int

	mu      sync.Mutex
	sources map[netip.Addr]*answerCredit
}

type answerCredit struct {
	bytes int
	last  time.Time // when the source last sent
}

func newAnswerBudget(allowance int) *answerBudget {
	return &answerBudget{allowance: allowance, sources: map[netip.Addr]*answerCredit{}}
}

// entryLocked is src's credit, a fresh allowance when it has none.
func (b *answerBudget) entryLocked(src netip.Addr, now time.Time) *answerCredit {
	c := b.sources[src]
	if c == nil {
		if len(b.sources) >= maxSources {
			clear(b.sources)
		}
		c = &answerCredit{bytes: b.allowance, last: now}
		b.sources[src] = c
	}
	return c
}

// received credits n bytes of STUN from src.
func (b *answerBudget) received(src netip.Addr, n int, now time.Time) {
	src = sourceKey(src)
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.entryLocked(src, now)
	if now.Sub(c.last) >= allowanceQuiet {
		c.bytes = max(c.bytes, b.allowance)
	}
	c.bytes = min(c.bytes+n, maxAnswerCredit)
	c.last = now
}

// spend takes an answer of n bytes to dst from its budget, or reports
// that the budget cannot pay it.
func (b *answerBudget) spend(dst netip.Addr, n int, now time.Time) bool {
	dst = sourceKey(dst)
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.entryLocked(dst, now)
	if c.bytes < n {
		return false
	}
	c.bytes -= n
	return true
}
