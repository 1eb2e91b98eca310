// Package tracker makes relayd a Jingle Nodes tracker: it learns other
// relays by crawling configured trackers (as Jitsi's discovery does: depth
// at most 3, at most 20 nodes, each node once) and the disco#items of
// configured domains, checks that each learned relay really grants
// channels, and lists only the healthy ones, forgetting those not seen for
// two crawls.
package tracker

import (
	"context"
	"encoding/xml"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"

	"github.com/jnrelay/jnrelay/relayd/jinglenodes"
)

// Limits of one crawl, as in Jitsi's discovery.
const (
	MaxDepth = 3
	MaxNodes = 20
	// maxCandidates bounds the health checks of one crawl.
	maxCandidates = 50
	queryTimeout  = 10 * time.Second
)

// Querier sends an IQ get and decodes the answer's payload into v (an
// online XMPP session).
type Querier interface {
	Query(ctx context.Context, to jid.JID, payload xml.TokenReader, v any) error
}

// Config configures a Tracker.
type Config struct {
	Trackers []jid.JID // crawled for <services/>
	Domains  []jid.JID // their disco#items are asked for <services/>
	Refresh  time.Duration
	// Querier returns an online session to query through, or nil when
	// none is online (the crawl is then skipped).
	Querier func() Querier
	// Self lists the relay's own addresses, never listed as learned.
	Self   func() []jid.JID
	Logger *slog.Logger
}

// Relay is a learned relay.
type Relay struct {
	Address  string
	Protocol string
	// LastSeen is when a crawl last found it; LastCheck when it last
	// granted a channel.
	LastSeen, LastCheck time.Time
	Healthy             bool
}

// Tracker holds what the crawls learned.
type Tracker struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	relays map[string]*Relay
}

// New returns a Tracker; Run crawls.
func New(cfg Config) *Tracker {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = 10 * time.Minute
	}
	return &Tracker{cfg: cfg, log: cfg.Logger, relays: make(map[string]*Relay)}
}

// Trackers are the configured trackers, listed in <services/>.
func (t *Tracker) Trackers() []jid.JID { return t.cfg.Trackers }

// Healthy lists the learned relays that granted a channel at their last
// check, sorted by address.
func (t *Tracker) Healthy() []Relay {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Relay
	for _, r := range t.relays {
		if r.Healthy {
			out = append(out, *r)
		}
	}
	slices.SortFunc(out, func(a, b Relay) int {
		if a.Address < b.Address {
			return -1
		}
		if a.Address > b.Address {
			return 1
		}
		return 0
	})
	return out
}

// Run crawls at once and then every Refresh until ctx ends. With nothing
// to crawl it returns at once.
func (t *Tracker) Run(ctx context.Context) {
	if len(t.cfg.Trackers) == 0 && len(t.cfg.Domains) == 0 {
		return
	}
	// The first crawl waits for a session to come online.
	wait := time.NewTicker(time.Second)
	defer wait.Stop()
	for t.cfg.Querier() == nil {
		select {
		case <-ctx.Done():
			return
		case <-wait.C:
		}
	}
	tick := time.NewTicker(t.cfg.Refresh)
	defer tick.Stop()
	for {
		t.Crawl(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// node is a JID to ask for <services/>, found at depth.
type node struct {
	addr  jid.JID
	depth int
}

// The payloads the tracker asks for.
var (
	servicesQuery = xml.Name{Space: jinglenodes.NS, Local: "services"}
	itemsQuery    = xml.Name{Space: jinglenodes.NSDiscoItem, Local: "query"}
	channelQuery  = xml.Name{Space: jinglenodes.NSChannel, Local: "channel"}
)

// itemsAnswer is the payload of a disco#items result.
type itemsAnswer struct {
	XMLName xml.Name
	Items   []struct {
		JID string `xml:"jid,attr"`
	} `xml:"item"`
}

// channelAnswer is the payload of a granted channel.
type channelAnswer struct {
	XMLName   xml.Name
	Host      string `xml:"host,attr"`
	LocalPort int    `xml:"localport,attr"`
}

// expect checks that an answer's payload is the element asked for; a
// result without payload decodes to nothing and is let through empty.
func expect(got, want xml.Name) error {
	if got != (xml.Name{}) && got != want {
		return fmt.Errorf("answer <%s xmlns=%q>, want <%s xmlns=%q>", got.Local, got.Space, want.Local, want.Space)
	}
	return nil
}

func query(name xml.Name, attrs ...xml.Attr) xml.TokenReader {
	return xmlstream.Wrap(nil, xml.StartElement{Name: name, Attr: attrs})
}

// Crawl runs one crawl and health check now.
func (t *Tracker) Crawl(ctx context.Context) {
	q := t.cfg.Querier()
	if q == nil {
		t.log.Debug("tracker crawl skipped: no XMPP session online")
		return
	}
	ask := func(to jid.JID, payload xml.TokenReader, v any) error {
		qctx, cancel := context.WithTimeout(ctx, queryTimeout)
		defer cancel()
		return q.Query(qctx, to, payload, v)
	}
	self := map[string]bool{}
	for _, a := range t.cfg.Self() {
		self[a.String()] = true
		self[a.Bare().String()] = true
	}

	var queue []node
	for _, tr := range t.cfg.Trackers {
		queue = append(queue, node{tr, 1})
	}
	for _, d := range t.cfg.Domains {
		var items itemsAnswer
		err := ask(d, query(itemsQuery), &items)
		if err == nil {
			err = expect(items.XMLName, itemsQuery)
		}
		if err != nil {
			t.log.Info("tracker: disco#items failed", "domain", d.String(), "err", err)
			continue
		}
		for _, it := range items.Items {
			if j, err := jid.Parse(it.JID); err == nil {
				queue = append(queue, node{j, 1})
			}
		}
	}

	visited := map[string]bool{}
	found := map[string]string{} // relay address -> protocol
	for len(queue) > 0 && len(visited) < MaxNodes {
		n := queue[0]
		queue = queue[1:]
		key := n.addr.String()
		if visited[key] || self[key] {
			continue
		}
		visited[key] = true
		var svc jinglenodes.Services
		if err := ask(n.addr, query(servicesQuery), &svc); err != nil {
			t.log.Debug("tracker: services query failed", "node", key, "err", err)
			continue
		}
		for _, e := range svc.Listings {
			// Roster-policy entries are for the owner's contacts only:
			// never pass them on.
			if e.Policy != "" && e.Policy != jinglenodes.ListingPublic || e.Address == "" {
				continue
			}
			a, err := jid.Parse(e.Address)
			if err != nil {
				continue
			}
			switch e.Kind {
			case jinglenodes.ListingRelay:
				if !self[a.String()] && len(found) < maxCandidates && (e.Protocol == "" || e.Protocol == "udp") {
					found[a.String()] = "udp"
				}
			case jinglenodes.ListingTracker:
				if n.depth < MaxDepth {
					queue = append(queue, node{a, n.depth + 1})
				}
			}
		}
	}

	now := time.Now()
	for addr, proto := range found {
		a := jid.MustParse(addr)
		// A relay is healthy when it grants a channel. XEP-0278 has no way
		// to release one: the unused channel expires at the relay.
		var ch channelAnswer
		err := ask(a, query(channelQuery, xml.Attr{Name: xml.Name{Local: "protocol"}, Value: "udp"}), &ch)
		if err == nil {
			err = expect(ch.XMLName, channelQuery)
		}
		healthy := err == nil && ch.LocalPort > 0 && ch.Host != ""
		t.mu.Lock()
		r := t.relays[addr]
		if r == nil {
			r = &Relay{Address: addr, Protocol: proto}
			t.relays[addr] = r
		}
		r.LastSeen = now
		if healthy {
			r.LastCheck = now
		}
		if r.Healthy != healthy {
			t.log.Info("tracker: relay health changed", "relay", addr, "healthy", healthy, "err", err)
		}
		r.Healthy = healthy
		t.mu.Unlock()
	}
	// Forget relays no crawl has found for two refresh periods.
	t.mu.Lock()
	for addr, r := range t.relays {
		if now.Sub(r.LastSeen) > 2*t.cfg.Refresh {
			delete(t.relays, addr)
			t.log.Info("tracker: relay forgotten", "relay", addr)
		}
	}
	t.mu.Unlock()
	t.log.Info("tracker crawl done", "nodes", len(visited), "relays", len(found), "healthy", len(t.Healthy()))
}
