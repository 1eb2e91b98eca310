package directory

import (
	"context"
	"encoding/xml"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// fakeService is an in-memory publish-subscribe service reached through
// a session whose address is addr.
type fakeService struct {
	t    testing.TB
	addr jid.JID
	// forbidRetract refuses retractions (as Prosody does for a
	// publisher of an open node); noPublisher leaves the publisher
	// attribute out of results; noCreate refuses node creation.
	forbidRetract, noPublisher, noCreate bool

	mu         sync.Mutex
	nodes      map[string]map[string]fakeItem // node -> id -> item
	order      map[string][]string
	subscribed []string
	probes     []string
	probeErr   error
}

type fakeItem struct{ publisher, payload string }

func newFake(t testing.TB, addr string, nodes ...string) *fakeService {
	f := &fakeService{t: t, addr: jid.MustParse(addr), nodes: map[string]map[string]fakeItem{}, order: map[string][]string{}}
	for _, n := range nodes {
		f.nodes[n] = map[string]fakeItem{}
	}
	return f
}

func (f *fakeService) Addr() jid.JID { return f.addr }

type fakeRequest struct {
	Publish *struct {
		Node string `xml:"node,attr"`
		Item struct {
			ID    string `xml:"id,attr"`
			Inner string `xml:",innerxml"`
		} `xml:"item"`
	} `xml:"publish"`
	Retract *struct {
		Node string `xml:"node,attr"`
		Item struct {
			ID string `xml:"id,attr"`
		} `xml:"item"`
	} `xml:"retract"`
	Create *struct {
		Node string `xml:"node,attr"`
	} `xml:"create"`
	Subscribe *struct {
		Node string `xml:"node,attr"`
		JID  string `xml:"jid,attr"`
	} `xml:"subscribe"`
	Items *struct {
		Node string `xml:"node,attr"`
	} `xml:"items"`
	Unsubscribe *struct {
		Node string `xml:"node,attr"`
		JID  string `xml:"jid,attr"`
	} `xml:"unsubscribe"`
}

func notFound() error  { return stanza.Error{Type: stanza.Cancel, Condition: stanza.ItemNotFound} }
func forbidden() error { return stanza.Error{Type: stanza.Auth, Condition: stanza.Forbidden} }

func (f *fakeService) Set(_ context.Context, _ jid.JID, payload xml.TokenReader, _ any) error {
	var req fakeRequest
	if err := xml.Unmarshal([]byte(encode(f.t, payload)), &req); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case req.Create != nil:
		if f.noCreate {
			return forbidden()
		}
		f.nodes[req.Create.Node] = map[string]fakeItem{}
	case req.Publish != nil:
		n, ok := f.nodes[req.Publish.Node]
		if !ok {
			return notFound()
		}
		id := req.Publish.Item.ID
		if _, had := n[id]; !had {
			f.order[req.Publish.Node] = append(f.order[req.Publish.Node], id)
		}
		n[id] = fakeItem{publisher: f.addr.Bare().String(), payload: req.Publish.Item.Inner}
	case req.Retract != nil:
		if f.forbidRetract {
			return forbidden()
		}
		delete(f.nodes[req.Retract.Node], req.Retract.Item.ID)
	case req.Subscribe != nil:
		f.subscribed = append(f.subscribed, req.Subscribe.Node+" "+req.Subscribe.JID)
	case req.Unsubscribe != nil:
		f.subscribed = slices.DeleteFunc(f.subscribed, func(s string) bool { return s == req.Unsubscribe.Node+" "+req.Unsubscribe.JID })
	default:
		return fmt.Errorf("fake: unknown set")
	}
	return nil
}

// itemXML is node's item id as a service sends it.
func (f *fakeService) itemXML(node, id string) string {
	it := f.nodes[node][id]
	pub := ""
	if !f.noPublisher {
		pub = fmt.Sprintf(" publisher='%s'", it.publisher)
	}
	return fmt.Sprintf("<item id='%s'%s>%s</item>", id, pub, it.payload)
}

func (f *fakeService) Query(_ context.Context, to jid.JID, payload xml.TokenReader, v any) error {
	doc := encode(f.t, payload)
	if strings.Contains(doc, "jinglenodes#channel") {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.probes = append(f.probes, to.String())
		if f.probeErr != nil {
			return f.probeErr
		}
		return xml.Unmarshal([]byte(`<channel xmlns='http://jabber.org/protocol/jinglenodes#channel' host='192.0.2.1' localport='40000'/>`), v)
	}
	var req fakeRequest
	if err := xml.Unmarshal([]byte(doc), &req); err != nil || req.Items == nil {
		return fmt.Errorf("fake: unknown query %s", doc)
	}
	f.mu.Lock()
	node := req.Items.Node
	if _, ok := f.nodes[node]; !ok {
		f.mu.Unlock()
		return notFound()
	}
	var items []string
	for _, id := range f.order[node] {
		if _, ok := f.nodes[node][id]; ok {
			items = append(items, f.itemXML(node, id))
		}
	}
	f.mu.Unlock()
	return xml.Unmarshal([]byte(itemsDoc(items...)), v)
}

// put stores an item as if publisher had published it.
func (f *fakeService) put(node, id, publisher string, it Item) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, had := f.nodes[node][id]; !had {
		f.order[node] = append(f.order[node], id)
	}
	f.nodes[node][id] = fakeItem{publisher: publisher, payload: encode(f.t, it.TokenReader())}
}

// stored parses node's item id back (ok false when absent).
func (f *fakeService) stored(node, id string) (Item, bool) {
	f.mu.Lock()
	it, ok := f.nodes[node][id]
	f.mu.Unlock()
	if !ok {
		return Item{}, false
	}
	got, err := parseAt(it.payload, time.Now())
	if err != nil {
		f.t.Fatalf("stored item %s: %v", id, err)
	}
	return got, true
}
