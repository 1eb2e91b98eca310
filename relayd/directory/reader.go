package directory

import (
	"context"
	"encoding/xml"
	"log/slog"
	"sync"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
)

// MaxKnown bounds the relays a reader keeps, all nodes together; past
// it, the one updated longest ago goes.
const MaxKnown = 1000

// ReaderConfig configures a Reader.
type ReaderConfig struct {
	Nodes []Node
	// Refresh is the publishers' refresh period: an item not updated for
	// three times as long is stale and forgotten. The reader fetches
	// every node again at this pace too (notifications can be lost).
	Refresh time.Duration
	// Session returns the online session to read n through, or nil.
	Session func(n Node) Requester
	// Self lists the relay's own addresses, never listed as learned.
	Self func() []jid.JID
	// Probe asks a relay for a channel; an unverified item (its
	// publisher unknown) is listed only once a probe succeeded. nil =
	// unverified items are never listed and nothing is probed.
	Probe func(ctx context.Context, q Requester, relay jid.JID) error
	// Probers is how many trackers health-check each relay (0 =
	// DefaultProbers): this reader probes the relays of its share
	// (share.go) every Refresh.
	Probers int
	Logger  *slog.Logger
	// Now is the clock (tests); nil = time.Now.
	Now func() time.Time
}

// known is one relay the reader learned.
type known struct {
	item  Item
	trust Trust
	// nodes are the directories holding the item (mirrors), by
	// Node.String().
	nodes map[string]bool
	// probedAt is when this reader last probed the relay (zero: never)
	// and probeErr what went wrong ("" = it granted a channel).
	probedAt time.Time
	probeErr string
	// inMyShare says whether this reader probes the relay, as weighed
	// for the share view of generation shareGen (health.go).
	inMyShare bool
	shareGen  uint64
}

// Reader keeps the relays of its directories.
type Reader struct {
	cfg ReaderConfig
	log *slog.Logger

	mu     sync.Mutex
	relays map[string]*known // by item JID
	nodes  map[string]*nodeState
	view   shareView
	// done is set by Unsubscribe: no subscription is made after it.
	done bool
}

// nodeState is where the reader is with one node.
type nodeState struct {
	// subscribedAs is the session address the subscription was made for
	// ("" = none yet, or the session was seen offline since).
	subscribedAs string
	lastFetch    time.Time
	// fetchErr is why the last fetch failed ("" = it worked, or none
	// was tried yet).
	fetchErr string
}

// NewReader returns a Reader; Run reads.
func NewReader(cfg ReaderConfig) *Reader {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Self == nil {
		cfg.Self = func() []jid.JID { return nil }
	}
	if cfg.Probers <= 0 {
		cfg.Probers = DefaultProbers
	}
	return &Reader{cfg: cfg, log: cfg.Logger, relays: map[string]*known{}, nodes: map[string]*nodeState{}}
}

// Run subscribes and fetches once a session is online (again after every
// change of session address), fetches every Refresh, probes unverified
// relays and forgets stale ones, until ctx ends.
func (r *Reader) Run(ctx context.Context) {
	tick := time.NewTicker(checkEvery)
	defer tick.Stop()
	for {
		r.step(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (r *Reader) step(ctx context.Context) {
	r.expire()
	var probeVia Requester
	for _, n := range r.cfg.Nodes {
		if s := r.stepNode(ctx, n); s != nil && probeVia == nil {
			probeVia = s
		}
	}
	if probeVia != nil {
		r.probe(ctx, probeVia)
	}
}

// stepNode subscribes to and fetches n when due; it returns the session
// n is read through, nil while it is offline.
func (r *Reader) stepNode(ctx context.Context, n Node) Requester {
	r.mu.Lock()
	if r.done {
		r.mu.Unlock()
		return nil
	}
	st := r.nodes[n.String()]
	if st == nil {
		st = &nodeState{}
		r.nodes[n.String()] = st
	}
	r.mu.Unlock()
	s := r.cfg.Session(n)
	if s == nil {
		// Offline: subscribe and fetch afresh once back (the server may
		// have restarted without keeping them).
		r.mu.Lock()
		st.subscribedAs = ""
		r.mu.Unlock()
		return nil
	}
	addr := s.Addr().String()
	r.mu.Lock()
	fresh := st.subscribedAs != addr
	due := fresh || r.cfg.Now().Sub(st.lastFetch) >= r.cfg.Refresh
	r.mu.Unlock()
	if fresh {
		var ignored struct{ XMLName xml.Name }
		if err := set(ctx, s, n.Service, subscribePayload(n.Node, s.Addr()), &ignored); err != nil {
			r.log.Warn("directory: subscribe failed", "node", n.String(), "err", err)
		}
	}
	if due {
		if r.fetch(ctx, s, n) {
			r.mu.Lock()
			st.subscribedAs, st.lastFetch = addr, r.cfg.Now()
			r.mu.Unlock()
		}
	}
	return s
}

// Unsubscribe ends the subscriptions this reader made (a clean stop):
// a client account's next session has another address, and the server
// would keep notifying the old one. It needs the sessions still online.
func (r *Reader) Unsubscribe(ctx context.Context) {
	r.mu.Lock()
	r.done = true
	r.mu.Unlock()
	for _, n := range r.cfg.Nodes {
		r.mu.Lock()
		st := r.nodes[n.String()]
		as := ""
		if st != nil {
			as, st.subscribedAs = st.subscribedAs, ""
		}
		r.mu.Unlock()
		s := r.cfg.Session(n)
		if as == "" || s == nil || s.Addr().String() != as {
			continue
		}
		var ignored struct{ XMLName xml.Name }
		if err := set(ctx, s, n.Service, unsubscribePayload(n.Node, s.Addr()), &ignored); err != nil {
			r.log.Info("directory: unsubscribe failed", "node", n.String(), "err", err)
			continue
		}
		r.log.Info("directory: unsubscribed", "node", n.String(), "address", as)
	}
}

// fetch reads all of a node's items (at most MaxItems) and replaces what
// the node held; it reports whether it could.
func (r *Reader) fetch(ctx context.Context, s Requester, n Node) bool {
	qctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	is := Items{now: r.cfg.Now}
	if err := s.Query(qctx, n.Service, itemsPayload(n.Node), &is); err != nil {
		r.log.Warn("directory: fetch failed", "node", n.String(), "err", err)
		r.mu.Lock()
		if st := r.nodes[n.String()]; st != nil {
			st.fetchErr = err.Error()
		}
		r.mu.Unlock()
		return false
	}
	r.mu.Lock()
	if st := r.nodes[n.String()]; st != nil {
		st.fetchErr = ""
	}
	for _, k := range r.relays {
		delete(k.nodes, n.String())
	}
	r.mu.Unlock()
	accepted := r.apply(n, is.Entries)
	r.mu.Lock()
	for addr, k := range r.relays {
		if len(k.nodes) == 0 {
			delete(r.relays, addr)
		}
	}
	r.mu.Unlock()
	r.log.Info("directory: fetched", "node", n.String(), "items", len(is.Entries), "accepted", accepted)
	return true
}

// apply adds, replaces and removes the relays entries say, for node n;
// it returns how many items it accepted.
func (r *Reader) apply(n Node, entries []Entry) int {
	self := map[string]bool{}
	for _, a := range r.cfg.Self() {
		self[a.String()] = true
	}
	stale := r.cfg.Now().Add(-3 * r.cfg.Refresh)
	accepted := 0
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range entries {
		if e.Retracted {
			r.drop(n, e.ID, "retracted")
			continue
		}
		trust, err := e.Check()
		if err != nil {
			r.log.Debug("directory: item refused", "node", n.String(), "id", e.ID, "err", err)
			continue
		}
		addr := e.Item.JID.String()
		if e.Item.Status == StatusStopped {
			r.drop(n, addr, "stopped")
			continue
		}
		if self[addr] || e.Item.Updated.Before(stale) {
			continue
		}
		k := r.relays[addr]
		if k != nil && k.item.Updated.After(e.Item.Updated) {
			k.nodes[n.String()] = true // an older copy (a mirror lagging)
			accepted++
			continue
		}
		if k == nil {
			if len(r.relays) >= MaxKnown {
				r.evictOldest()
			}
			k = &known{nodes: map[string]bool{}}
			r.relays[addr] = k
			r.log.Info("directory: relay learned", "relay", addr, "node", n.String(), "trust", trust.String())
		}
		if trust == Unverified && k.trust == Verified && same(k.item, e.Item) {
			// A mirror that names no publisher repeats what the relay
			// itself published on another: still verified.
			trust = Verified
		}
		if trust != k.trust {
			// Trust changed (the service started or stopped naming
			// publishers): the probe of the other kind counts no more.
			k.probedAt, k.probeErr = time.Time{}, ""
		}
		k.item, k.trust = e.Item, trust
		k.nodes[n.String()] = true
		accepted++
	}
	return accepted
}

// drop removes node n's copy of addr; the relay goes once no node holds
// it. r.mu is held.
func (r *Reader) drop(n Node, addr, why string) {
	k := r.relays[addr]
	if k == nil {
		return
	}
	delete(k.nodes, n.String())
	if len(k.nodes) == 0 {
		delete(r.relays, addr)
		r.log.Info("directory: relay forgotten", "relay", addr, "why", why)
	}
}

// evictOldest forgets the relay updated longest ago. r.mu is held.
func (r *Reader) evictOldest() {
	var oldest string
	var at time.Time
	for addr, k := range r.relays {
		if oldest == "" || k.item.Updated.Before(at) {
			oldest, at = addr, k.item.Updated
		}
	}
	delete(r.relays, oldest)
}

// expire forgets relays not updated for three refresh periods.
func (r *Reader) expire() {
	stale := r.cfg.Now().Add(-3 * r.cfg.Refresh)
	r.mu.Lock()
	defer r.mu.Unlock()
	for addr, k := range r.relays {
		if k.item.Updated.Before(stale) {
			delete(r.relays, addr)
			r.log.Info("directory: relay forgotten", "relay", addr, "why", "stale")
		}
	}
}

// Handler passes notifications from the configured nodes to the reader
// and every other element to next.
func (r *Reader) Handler(next xmpp.Handler) xmpp.Handler {
	return xmpp.HandlerFunc(func(t xmlstream.TokenReadEncoder, start *xml.StartElement) error {
		if start.Name.Local != "message" {
			return next.HandleXMPP(t, start)
		}
		r.notified(t, start)
		return nil
	})
}

// notified applies one message's event, if it comes from a configured
// node.
func (r *Reader) notified(t xml.TokenReader, start *xml.StartElement) {
	var msg struct {
		From  string `xml:"from,attr"`
		Event *Items `xml:"http://jabber.org/protocol/pubsub#event event"`
	}
	msg.Event = &Items{now: r.cfg.Now}
	// t yields the message's children and its end element (as mellium
	// hands a stanza to its handler): a decoder must see the start too,
	// else the end is unbalanced.
	d := xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(*start), t))
	if err := d.Decode(&msg); err != nil || msg.Event.Node == "" {
		return
	}
	from, err := jid.Parse(msg.From)
	if err != nil {
		return
	}
	for _, n := range r.cfg.Nodes {
		if n.Node == msg.Event.Node && n.Service.Equal(from) {
			r.apply(n, msg.Event.Entries)
			return
		}
	}
}
