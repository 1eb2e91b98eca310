package jinglenodes

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"mellium.im/xmpp/jid"
)

// JIDLimits bound what one requester (a bare JID) may take: live channels
// at once, and channel requests per minute (with a burst of the same
// size). 0 = no limit.
type JIDLimits struct {
	Channels          int
	RequestsPerMinute int
}

// maxTrackedJIDs bounds the requester table. Entries holding no channel
// are dropped first, least recently seen first; a flood from many JIDs
// therefore costs at most this many small entries.
const maxTrackedJIDs = 20000

// perJID is the requester table behind JIDLimits.
type perJID struct {
	mu     sync.Mutex
	limits JIDLimits
	jids   map[string]*jidState
}

type jidState struct {
	limiter  *rate.Limiter // nil when requests are not limited
	channels int
	seen     time.Time
}

func newPerJID() *perJID { return &perJID{jids: make(map[string]*jidState)} }

// setLimits changes the limits; requesters' limiters are rebuilt lazily.
func (p *perJID) setLimits(l JIDLimits) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l == p.limits {
		return
	}
	p.limits = l
	for _, st := range p.jids {
		st.limiter = nil
		if l.RequestsPerMinute > 0 {
			st.limiter = newLimiter(l.RequestsPerMinute)
		}
	}
}

func newLimiter(perMinute int) *rate.Limiter {
	return rate.NewLimiter(rate.Limit(float64(perMinute)/60), perMinute)
}

// admit counts a channel request from requester and says whether it may
// have a channel: a refusal's text says which limit. A granted request
// must be followed by granted (or nothing, if the allocation failed).
func (p *perJID) admit(requester jid.JID, now time.Time) error {
	key := requester.Bare().String()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.limits == (JIDLimits{}) {
		return nil
	}
	st := p.entry(key)
	st.seen = now
	if st.limiter != nil && !st.limiter.AllowN(now, 1) {
		return fmt.Errorf("too many channel requests from %s: the limit is %d a minute", key, p.limits.RequestsPerMinute)
	}
	if n := p.limits.Channels; n > 0 && st.channels >= n {
		return fmt.Errorf("%s already holds %d channels, the most one requester may hold", key, st.channels)
	}
	return nil
}

// granted records a channel given to requester; released undoes it when
// the channel ends.
func (p *perJID) granted(requester jid.JID) { p.add(requester, 1) }

func (p *perJID) released(requester jid.JID) { p.add(requester, -1) }

func (p *perJID) add(requester jid.JID, d int) {
	key := requester.Bare().String()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.jids[key] == nil && d < 0 {
		return
	}
	st := p.entry(key)
	st.channels = max(0, st.channels+d)
}

// entry is key's state, created (making room first) if it has none.
func (p *perJID) entry(key string) *jidState {
	st := p.jids[key]
	if st == nil {
		p.makeRoom()
		st = &jidState{}
		if p.limits.RequestsPerMinute > 0 {
			st.limiter = newLimiter(p.limits.RequestsPerMinute)
		}
		p.jids[key] = st
	}
	return st
}

// makeRoom drops entries that hold no channel, oldest first, until the
// table is at three quarters of its bound (so the sweep is rare).
func (p *perJID) makeRoom() {
	if len(p.jids) < maxTrackedJIDs {
		return
	}
	type aged struct {
		key  string
		seen time.Time
	}
	var idle []aged
	for k, st := range p.jids {
		if st.channels == 0 {
			idle = append(idle, aged{k, st.seen})
		}
	}
	excess := len(p.jids) - maxTrackedJIDs*3/4
	if excess > len(idle) {
		excess = len(idle)
	}
	// A full sort is fine: the sweep is rare and the table bounded.
	slices.SortFunc(idle, func(a, b aged) int { return a.seen.Compare(b.seen) })
	for _, a := range idle[:excess] {
		delete(p.jids, a.key)
	}
}

// tracked is how many requesters are in the table (for tests).
func (p *perJID) tracked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.jids)
}
