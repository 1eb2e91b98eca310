package turn

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/jid"
)

// AllocationIDPrefix starts every allocation id, so that one list can
// hold allocations beside Jingle Nodes channels (whose ids are hex).
const AllocationIDPrefix = "turn-"

// Allocation describes one live TURN allocation.
type Allocation struct {
	ID string `json:"id"`
	// Requester is who the credential was minted for (an anonymous
	// requester at turn.invalid when relayd did not mint it).
	Requester string `json:"requester"`
	// Client is the client's transport address as the server sees it,
	// Transport how it reaches the server: "udp", "tcp" or "tls" (both
	// empty in the instant between the relayed socket's opening and
	// pion's report of the allocation).
	Client    string    `json:"client,omitempty"`
	Transport string    `json:"transport,omitempty"`
	Relayed   string    `json:"relayed"`
	Created   time.Time `json:"created"`
	// Peers is how many peer addresses the client holds permissions for.
	Peers int `json:"peers"`
	// Payload bytes sent to the peers and received from them.
	BytesToPeers   uint64 `json:"bytes_to_peers"`
	BytesFromPeers uint64 `json:"bytes_from_peers"`
}

// allocations is the server's registry of live allocations, keyed by id
// and by relayed address (the key pion's events carry). Entries are
// added when the relayed socket opens (allocate) and removed when it
// closes (relayConn.Close); pion's events fill in the client's address
// and the permissions.
type allocations struct {
	mu        sync.Mutex
	next      uint64
	byID      map[string]*liveAllocation
	byRelayed map[netip.AddrPort]*liveAllocation
}

type liveAllocation struct {
	id        string
	requester jid.JID
	relayed   netip.AddrPort
	created   time.Time
	conn      *relayConn
	client    netip.AddrPort
	transport string
	peers     map[netip.Addr]struct{}
}

func newAllocations() *allocations {
	return &allocations{byID: map[string]*liveAllocation{}, byRelayed: map[netip.AddrPort]*liveAllocation{}}
}

// add registers conn's allocation and returns its id.
func (r *allocations) add(conn *relayConn, requester jid.JID, relayed netip.AddrPort) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	a := &liveAllocation{id: AllocationIDPrefix + strconv.FormatUint(r.next, 10), requester: requester, relayed: relayed,
		created: time.Now(), conn: conn, peers: map[netip.Addr]struct{}{}}
	r.byID[a.id] = a
	r.byRelayed[relayed] = a
	return a.id
}

// remove forgets the allocation id (its relayed socket closed).
func (r *allocations) remove(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a := r.byID[id]; a != nil {
		delete(r.byID, id)
		delete(r.byRelayed, a.relayed)
	}
}

// created notes the client's address and transport pion reports for the
// allocation at relayed.
func (r *allocations) created(relayed, client netip.AddrPort, transport string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a := r.byRelayed[relayed]; a != nil {
		a.client, a.transport = client, transport
	}
}

// permit adds (or, with on false, removes) a permission for peer to the
// allocation at relayed.
func (r *allocations) permit(relayed netip.AddrPort, peer netip.Addr, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.byRelayed[relayed]
	switch {
	case a == nil:
	case on:
		a.peers[peer.Unmap()] = struct{}{}
	default:
		delete(a.peers, peer.Unmap())
	}
}

// conn returns the relayed socket of allocation id.
func (r *allocations) conn(id string) (*relayConn, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.byID[id]
	if a == nil {
		return nil, false
	}
	return a.conn, true
}

// list describes the live allocations, oldest first.
func (r *allocations) list() []Allocation {
	r.mu.Lock()
	out := make([]Allocation, 0, len(r.byID))
	for _, a := range r.byID {
		d := Allocation{ID: a.id, Requester: a.requester.String(), Relayed: a.relayed.String(), Created: a.created,
			Transport: a.transport, Peers: len(a.peers),
			BytesToPeers: a.conn.toPeers.Load(), BytesFromPeers: a.conn.fromPeers.Load()}
		if a.client.IsValid() {
			d.Client = a.client.String()
		}
		out = append(out, d)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return strings.Compare(out[i].ID, out[j].ID) < 0
	})
	return out
}

// Allocations lists the live allocations, oldest first.
func (s *Server) Allocations() []Allocation { return s.allocs.list() }

// Kill ends allocation id now and reports whether it was live. Its
// relayed socket is closed: pion's reader of it fails and deletes the
// allocation (the client's next Refresh gets 437), and the close gives
// the port and the admission reservation back.
func (s *Server) Kill(id string) bool {
	conn, ok := s.allocs.conn(id)
	if ok {
		conn.Close()
	}
	return ok
}
