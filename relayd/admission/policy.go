package admission

import (
	"sync"

	"mellium.im/xmpp/jid"
)

// Policy decides who may request channels through one session.
type Policy struct {
	// RosterOnly admits only contacts with a presence subscription to the
	// account ("from" or "both"): a donor's relay for their friends.
	RosterOnly bool
	Roster     *Roster // required when RosterOnly
	// Allow, when not empty, admits only the bare JIDs and domains it
	// lists; Deny refuses those it lists, and wins over Allow.
	Allow, Deny []jid.JID
}

// Permit reports whether requester may get a channel, and if not, why. A
// nil Policy is public: it permits everyone.
func (p *Policy) Permit(requester jid.JID) (bool, string) {
	if p == nil {
		return true, ""
	}
	bare := requester.Bare()
	if matches(p.Deny, bare) {
		return false, "requester is on the relay's deny list"
	}
	if len(p.Allow) > 0 && !matches(p.Allow, bare) {
		return false, "requester is not on the relay's allow list"
	}
	if p.RosterOnly && (p.Roster == nil || !p.Roster.Subscribed(bare)) {
		return false, "this relay serves its owner's contacts only"
	}
	return true, ""
}

// matches reports whether bare is listed, by itself or by its domain.
func matches(list []jid.JID, bare jid.JID) bool {
	for _, e := range list {
		if e.Localpart() == "" && e.Domainpart() == bare.Domainpart() {
			return true
		}
		if e.Equal(bare) {
			return true
		}
	}
	return false
}

// Roster is the account's contact list as far as policy needs it: who has
// a presence subscription to the account. Safe for concurrent use.
type Roster struct {
	mu   sync.RWMutex
	subs map[string]string // bare JID -> subscription (none, to, from, both)
}

// NewRoster returns an empty roster.
func NewRoster() *Roster { return &Roster{subs: make(map[string]string)} }

// RosterItem is one contact.
type RosterItem struct {
	JID          jid.JID
	Subscription string // none, to, from, both, remove
}

// Replace sets the whole roster (after a fetch).
func (r *Roster) Replace(items []RosterItem) {
	m := make(map[string]string, len(items))
	for _, it := range items {
		if it.Subscription != "remove" {
			m[it.JID.Bare().String()] = it.Subscription
		}
	}
	r.mu.Lock()
	r.subs = m
	r.mu.Unlock()
}

// Update applies a roster push.
func (r *Roster) Update(items []RosterItem) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, it := range items {
		key := it.JID.Bare().String()
		if it.Subscription == "remove" {
			delete(r.subs, key)
			continue
		}
		r.subs[key] = it.Subscription
	}
}

// Subscribed reports whether bare is subscribed to the account's presence.
func (r *Roster) Subscribed(bare jid.JID) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s := r.subs[bare.Bare().String()]
	return s == "from" || s == "both"
}

// Len is the number of contacts.
func (r *Roster) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.subs)
}
