package tracker

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/xmpp/jid"
)

// network is a fake XMPP world for the crawl logic: what each address
// answers to services, disco#items and channel queries.
type network struct {
	mu       sync.Mutex
	services map[string]string // address -> <services/> inner XML
	items    map[string][]string
	grants   map[string]bool // address -> grants channels
	asked    map[string]int  // "kind address" -> count
}

func (n *network) Query(_ context.Context, to jid.JID, payload xml.TokenReader, v any) error {
	tok, err := payload.Token()
	if err != nil {
		return err
	}
	start := tok.(xml.StartElement)
	n.mu.Lock()
	n.asked[start.Name.Local+" "+to.String()]++
	n.mu.Unlock()
	var doc string
	switch start.Name.Local {
	case "services":
		inner, ok := n.services[to.String()]
		if !ok {
			return errors.New("service-unavailable")
		}
		doc = `<services xmlns='http://jabber.org/protocol/jinglenodes'>` + inner + `</services>`
	case "query":
		var b strings.Builder
		for _, it := range n.items[to.String()] {
			fmt.Fprintf(&b, `<item jid='%s'/>`, it)
		}
		doc = `<query xmlns='http://jabber.org/protocol/disco#items'>` + b.String() + `</query>`
	case "channel":
		if !n.grants[to.String()] {
			return errors.New("resource-constraint")
		}
		doc = `<channel xmlns='http://jabber.org/protocol/jinglenodes#channel' host='203.0.113.9' localport='40000' remoteport='40002'/>`
	}
	return xml.Unmarshal([]byte(doc), v)
}

func relay(addr, policy string) string {
	return fmt.Sprintf(`<relay policy='%s' address='%s' protocol='udp'/>`, policy, addr)
}

func trackerEntry(addr string) string {
	return fmt.Sprintf(`<tracker policy='public' address='%s' protocol='udp'/>`, addr)
}

func newNet() *network {
	return &network{
		services: map[string]string{
			"t1.example":     relay("r1.example", "public") + relay("donor@r2.example/x", "roster") + trackerEntry("t2.example") + relay("self.example", "public"),
			"t2.example":     relay("r3.example", "public") + trackerEntry("t3.example") + trackerEntry("t1.example"),
			"t3.example":     relay("r4.example", "public") + trackerEntry("t4.example"),
			"t4.example":     relay("too-deep.example", "public"),
			"d-item.example": relay("r5.example", "public"),
		},
		items:  map[string][]string{"domain.example": {"d-item.example", "conference.domain.example"}},
		grants: map[string]bool{"r1.example": true, "r4.example": true, "r5.example": true, "too-deep.example": true},
		asked:  map[string]int{},
	}
}

func newTestTracker(n *network, refresh time.Duration) *Tracker {
	return New(Config{
		Trackers: []jid.JID{jid.MustParse("t1.example")},
		Domains:  []jid.JID{jid.MustParse("domain.example")},
		Refresh:  refresh,
		Querier:  func() Querier { return n },
		Self:     func() []jid.JID { return []jid.JID{jid.MustParse("self.example")} },
	})
}

func addresses(rs []Relay) string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Address)
	}
	return strings.Join(out, ",")
}

func TestCrawl(t *testing.T) {
	n := newNet()
	tr := newTestTracker(n, time.Hour)
	tr.Crawl(context.Background())
	// r1 (t1), r4 (t3 at depth 3) and r5 (domain item) grant channels;
	// r3 does not; roster-policy r2, self, and t4's relay (depth 4) are
	// never candidates.
	if got := addresses(tr.Healthy()); got != "r1.example,r4.example,r5.example" {
		t.Fatalf("healthy relays %s", got)
	}
	for _, never := range []string{"channel donor@r2.example/x", "channel self.example", "services t4.example", "channel too-deep.example"} {
		if n.asked[never] != 0 {
			t.Errorf("asked %q", never)
		}
	}
	if n.asked["channel r3.example"] != 1 {
		t.Errorf("r3 checked %d times", n.asked["channel r3.example"])
	}
	// Each node once, even though t2 lists t1 again.
	if n.asked["services t1.example"] != 1 {
		t.Errorf("t1 asked %d times", n.asked["services t1.example"])
	}
}

func TestNodeLimit(t *testing.T) {
	n := &network{services: map[string]string{}, grants: map[string]bool{}, asked: map[string]int{}, items: map[string][]string{}}
	// A tracker listing 40 trackers (depth 2), each listing a relay.
	var list strings.Builder
	for i := range 40 {
		addr := fmt.Sprintf("t%d.example", i+10)
		list.WriteString(trackerEntry(addr))
		n.services[addr] = relay(fmt.Sprintf("r%d.example", i), "public")
	}
	n.services["t1.example"] = list.String()
	tr := New(Config{Trackers: []jid.JID{jid.MustParse("t1.example")}, Querier: func() Querier { return n }, Self: func() []jid.JID { return nil }})
	tr.Crawl(context.Background())
	services := 0
	for k, v := range n.asked {
		if strings.HasPrefix(k, "services ") {
			services += v
		}
	}
	if services != MaxNodes {
		t.Fatalf("asked %d nodes, want the limit %d", services, MaxNodes)
	}
}

func TestUnhealthyAndForgotten(t *testing.T) {
	n := newNet()
	tr := newTestTracker(n, time.Millisecond)
	tr.Crawl(context.Background())
	if !strings.Contains(addresses(tr.Healthy()), "r1.example") {
		t.Fatal("r1 not healthy")
	}
	// r1 stops granting: unlisted at the next crawl.
	n.grants["r1.example"] = false
	tr.Crawl(context.Background())
	if strings.Contains(addresses(tr.Healthy()), "r1.example") {
		t.Fatal("r1 still listed after failing its check")
	}
	// r4 disappears from the network: forgotten once stale.
	delete(n.services, "t3.example")
	time.Sleep(3 * time.Millisecond) // the staleness period itself, not synchronisation
	tr.Crawl(context.Background())
	tr.mu.Lock()
	_, kept := tr.relays["r4.example"]
	tr.mu.Unlock()
	if kept {
		t.Fatal("r4 not forgotten after two refresh periods unseen")
	}
}

func TestNoSessionNoCrawl(t *testing.T) {
	tr := New(Config{Trackers: []jid.JID{jid.MustParse("t1.example")}, Querier: func() Querier { return nil }, Self: func() []jid.JID { return nil }})
	tr.Crawl(context.Background())
	if len(tr.Healthy()) != 0 {
		t.Fatal("relays without a session")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tr.Run(ctx) // returns: cancelled while waiting for a session
}
