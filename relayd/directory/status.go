package directory

import "time"

// Publishing states of one directory, as PublishStatus says them.
const (
	StatePublished = "published" // the item is there
	StateFailing   = "failing"   // the last attempt failed (Error says why)
	StateWaiting   = "waiting"   // no session online to publish through yet
	StateUnlisted  = "unlisted"  // taken out while the relay is not to be listed (draining)
	StateWithdrawn = "withdrawn" // taken out for good (a clean stop)
)

// PublishStatus is where the relay is with one directory it publishes to.
type PublishStatus struct {
	Node  string `json:"node"` // service/node
	State string `json:"state"`
	// Address is the item's jid (the session's address) while published.
	Address       string    `json:"address,omitempty"`
	LastAttempt   time.Time `json:"last_attempt,omitzero"`
	LastPublished time.Time `json:"last_published,omitzero"`
	Error         string    `json:"error,omitempty"`
}

// Status reports each directory the relay publishes to.
func (p *Publisher) Status() []PublishStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]PublishStatus, 0, len(p.cfg.Nodes))
	for _, n := range p.cfg.Nodes {
		key := n.String()
		st := PublishStatus{Node: key, LastAttempt: p.tried[key], Error: p.failed[key]}
		pub, ok := p.nodes[key]
		if ok {
			st.Address, st.LastPublished = pub.item.JID.String(), pub.at
		}
		switch {
		case p.withdrawn:
			st.State = StateWithdrawn
		case p.unlisted:
			st.State = StateUnlisted
		case st.Error != "":
			st.State = StateFailing
		case ok:
			st.State = StatePublished
		default:
			st.State = StateWaiting
		}
		out = append(out, st)
	}
	return out
}

// NodeStatus is where a reader is with one directory.
type NodeStatus struct {
	Node string `json:"node"` // service/node
	// SubscribedAs is the address notifications go to ("" = not
	// subscribed: no session online yet, or it just came back).
	SubscribedAs string    `json:"subscribed_as,omitempty"`
	LastFetch    time.Time `json:"last_fetch,omitzero"`
	Error        string    `json:"error,omitempty"` // the last fetch's, if it failed
	// Relays is how many relays of this node the reader keeps (a relay
	// of two mirrors counts in each).
	Relays int `json:"relays"`
}

// ReaderStatus is what a reader holds.
type ReaderStatus struct {
	Nodes []NodeStatus `json:"nodes"`
	ReaderTotals
}

// ReaderTotals count what a reader holds, its directories together.
type ReaderTotals struct {
	// Relays is how many relays the reader keeps, mirrors merged.
	Relays int `json:"relays"`
	// Trackers is how many other trackers the reader knows (trusted
	// items that say <tracker/>); ProbeShare how many relays this one
	// health-checks, of which ProbeFailing failed their last probe.
	Trackers     int `json:"trackers"`
	ProbeShare   int `json:"probe_share"`
	ProbeFailing int `json:"probe_failing"`
	// Listed is how many relays <services/> lists now (Listed).
	Listed int `json:"listed"`
}

// Status reports the reader's directories and relays; near and max are
// Listed's.
func (r *Reader) Status(near Near, max int) ReaderStatus {
	listed := len(r.Listed(near, max))
	self := r.identity()
	r.mu.Lock()
	defer r.mu.Unlock()
	st := ReaderStatus{Nodes: make([]NodeStatus, 0, len(r.cfg.Nodes)), ReaderTotals: ReaderTotals{Relays: len(r.relays), Listed: listed}}
	r.refreshView(self)
	st.Trackers = len(r.view.trackers)
	for addr, k := range r.relays {
		if r.mine(addr, k) {
			st.ProbeShare++
			if k.probeFailed() {
				st.ProbeFailing++
			}
		}
	}
	for _, n := range r.cfg.Nodes {
		key := n.String()
		ns := NodeStatus{Node: key}
		if s := r.nodes[key]; s != nil {
			ns.SubscribedAs, ns.LastFetch, ns.Error = s.subscribedAs, s.lastFetch, s.fetchErr
		}
		for _, k := range r.relays {
			if k.nodes[key] {
				ns.Relays++
			}
		}
		st.Nodes = append(st.Nodes, ns)
	}
	return st
}
