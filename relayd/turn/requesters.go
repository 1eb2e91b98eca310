package turn

import (
	"sync"
	"time"

	"mellium.im/xmpp/jid"
)

// DefaultMaxRequesters bounds the credential ids Requesters remembers.
const DefaultMaxRequesters = 4096

// Requesters remembers, for each TURN REST credential id relayd minted,
// the requester it was minted for, until the credential expires: an
// allocation made with it is then reserved in that requester's name. It
// is bounded; when full, the entry that expires first is forgotten (its
// allocations then count as the anonymous requester of that id, see
// requesterFor). Safe for concurrent use.
type Requesters struct {
	mu  sync.Mutex
	max int
	ids map[string]minted
	now func() time.Time
}

type minted struct {
	requester jid.JID
	expires   time.Time
}

// NewRequesters returns an empty map holding at most max ids (0 =
// DefaultMaxRequesters).
func NewRequesters(max int) *Requesters {
	if max <= 0 {
		max = DefaultMaxRequesters
	}
	return &Requesters{max: max, ids: make(map[string]minted), now: time.Now}
}

// Record notes that the credential id, valid until expires, was minted
// for requester. It is the hook the XEP-0215 handlers call.
func (r *Requesters) Record(id string, requester jid.JID, expires time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.ids[id]; !ok && len(r.ids) >= r.max {
		r.evictLocked()
	}
	r.ids[id] = minted{requester: requester.Bare(), expires: expires}
}

// evictLocked drops every expired id, or else the one expiring first.
func (r *Requesters) evictLocked() {
	now := r.now()
	var first string
	var firstAt time.Time
	for id, m := range r.ids {
		if m.expires.Before(now) {
			delete(r.ids, id)
			continue
		}
		if first == "" || m.expires.Before(firstAt) {
			first, firstAt = id, m.expires
		}
	}
	if len(r.ids) >= r.max {
		delete(r.ids, first)
	}
}

// Lookup returns the requester id was minted for.
func (r *Requesters) Lookup(id string) (jid.JID, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.ids[id]
	return m.requester, ok
}

// Len is the number of ids remembered.
func (r *Requesters) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ids)
}

// anonymousDomain is the domain of requesters relayd did not mint the
// credential for (a provider's own tooling minting from the shared
// secret, or an id forgotten when the map was full).
const anonymousDomain = "turn.invalid"

// requesterFor is the requester an allocation with credential id counts
// against: the one it was minted for, else an anonymous requester of its
// own at anonymousDomain, so the per-requester limits still apply per id
// and the per-domain limit bounds all of them together.
func (r *Requesters) requesterFor(id string) jid.JID {
	if j, ok := r.Lookup(id); ok {
		return j
	}
	if j, err := jid.New(id, anonymousDomain, ""); err == nil {
		return j
	}
	return jid.MustParse("invalid@" + anonymousDomain)
}
