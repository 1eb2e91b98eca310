package jinglenodes

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"

	"github.com/jnrelay/jnrelay/relayd/channel"

	"github.com/jnrelay/jnrelay/relayd/admission"
)

// fakeAllocator hands out sequential blocks up to a limit.
type fakeAllocator struct {
	mu    sync.Mutex
	left  int
	next  int
	calls int
	err   error
}

func (a *fakeAllocator) Allocate() (channel.Info, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	if a.err != nil {
		return channel.Info{}, a.err
	}
	if a.left == 0 {
		return channel.Info{}, channel.ErrPoolExhausted
	}
	a.left--
	p := 40000 + 4*a.next
	a.next++
	return channel.Info{ID: "id" + string(rune('a'+a.next)), LocalPort: p, RemotePort: p + 2, Expire: time.Minute}, nil
}

// recordingSender is a Session that keeps what was sent.
type recordingSender struct {
	mu   sync.Mutex
	sent []string
	err  error
	addr jid.JID // relayJID when zero
}

func (s *recordingSender) Addr() jid.JID {
	if s.addr.Equal(jid.JID{}) {
		return relayJID
	}
	return s.addr
}

func (s *recordingSender) Name() string { return "test" }

func (s *recordingSender) Send(_ context.Context, r xml.TokenReader) error {
	if s.err != nil {
		return s.err
	}
	var buf bytes.Buffer
	e := xml.NewEncoder(&buf)
	if _, err := xmlstream.Copy(e, r); err != nil {
		return err
	}
	if err := e.Flush(); err != nil {
		return err
	}
	s.mu.Lock()
	s.sent = append(s.sent, buf.String())
	s.mu.Unlock()
	return nil
}

type rw struct {
	*xml.Decoder
	*xml.Encoder
}

var relayJID = jid.MustParse("relay.example.org")

func newTestService(alloc Allocator) (*Service, *Handler, *recordingSender) {
	svc := New(Config{Allocator: alloc, PublicHost: func() netip.Addr { return netip.MustParseAddr("203.0.113.7") }})
	snd := &recordingSender{}
	return svc, svc.Handler(snd, nil), snd
}

// reply is the generic shape of an answer.
type reply struct {
	XMLName xml.Name
	ID      string     `xml:"id,attr"`
	Type    string     `xml:"type,attr"`
	To      string     `xml:"to,attr"`
	From    string     `xml:"from,attr"`
	Inner   []innerEl  `xml:",any"`
	Error   *errorElem `xml:"error"`
}

type innerEl struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Inner   []innerEl  `xml:",any"`
}

type errorElem struct {
	Type  string    `xml:"type,attr"`
	Conds []innerEl `xml:",any"`
}

func (e *errorElem) condition() string {
	for _, c := range e.Conds {
		if c.XMLName.Local != "text" {
			return c.XMLName.Local
		}
	}
	return ""
}

func (e innerEl) attr(name string) (string, bool) {
	for _, a := range e.Attrs {
		if a.Name.Local == name {
			return a.Value, true
		}
	}
	return "", false
}

// handle feeds one stanza to h and returns its answer ("" when none).
func handle(t testing.TB, h *Handler, stanzaXML string) (reply, string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(stanzaXML))
	var start xml.StartElement
	for {
		tok, err := d.Token()
		if err != nil {
			t.Fatalf("test stanza: %v", err)
		}
		if s, ok := tok.(xml.StartElement); ok {
			start = s
			break
		}
	}
	var out bytes.Buffer
	enc := xml.NewEncoder(&out)
	if err := h.HandleXMPP(rw{d, enc}, &start); err != nil {
		t.Fatalf("HandleXMPP: %v", err)
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	if out.Len() == 0 {
		return reply{}, ""
	}
	var r reply
	if err := xml.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("answer %q: %v", out.String(), err)
	}
	return r, out.String()
}

const client = `from='alice@example.org/phone' to='relay.example.org' xmlns='jabber:component:accept'`

func TestChannelRequestForms(t *testing.T) {
	for name, payload := range map[string]string{
		"udp":         `<channel xmlns='http://jabber.org/protocol/jinglenodes#channel' protocol='udp'/>`,
		"no protocol": `<channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/>`,
		"upper case":  `<channel xmlns='http://jabber.org/protocol/jinglenodes#channel' protocol='UDP'/>`,
		"legacy":      `<candidate xmlns='http://jabber.org/protocol/jinglenodes#channel'/>`,
		"set":         `<channel xmlns='http://jabber.org/protocol/jinglenodes#channel' protocol='udp'/>`,
	} {
		t.Run(name, func(t *testing.T) {
			_, h, _ := newTestService(&fakeAllocator{left: 1})
			typ := "get"
			if name == "set" {
				typ = "set"
			}
			r, raw := handle(t, h, `<iq type='`+typ+`' id='c1' `+client+`>`+payload+`</iq>`)
			if r.Type != "result" || r.ID != "c1" || r.To != "alice@example.org/phone" || r.From != "relay.example.org" {
				t.Fatalf("answer %s", raw)
			}
			if len(r.Inner) != 1 {
				t.Fatalf("answer payload %s", raw)
			}
			ch := r.Inner[0]
			wantName := "channel"
			if name == "legacy" {
				wantName = "candidate"
			}
			if ch.XMLName != (xml.Name{Space: NSChannel, Local: wantName}) {
				t.Fatalf("payload element %v", ch.XMLName)
			}
			for attr, want := range map[string]string{"host": "203.0.113.7", "localport": "40000", "remoteport": "40002", "protocol": "udp", "expire": "60", "id": "idb"} {
				if got, _ := ch.attr(attr); got != want {
					t.Errorf("%s=%q, want %q (%s)", attr, got, want, raw)
				}
			}
			if _, ok := ch.attr("maxkbps"); ok {
				t.Errorf("maxkbps present without a limit: %s", raw)
			}
		})
	}
}

func TestMaxKbpsAdvertisedWhenLimited(t *testing.T) {
	svc := New(Config{Allocator: limitedAllocator{}, PublicHost: func() netip.Addr { return netip.MustParseAddr("203.0.113.7") }})
	h := svc.Handler(&recordingSender{}, nil)
	r, raw := handle(t, h, `<iq type='get' id='m' `+client+`><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`)
	if got, _ := r.Inner[0].attr("maxkbps"); got != "256" {
		t.Fatalf("maxkbps %q in %s", got, raw)
	}
}

type limitedAllocator struct{}

func (limitedAllocator) Allocate() (channel.Info, error) {
	return channel.Info{ID: "x", LocalPort: 50000, RemotePort: 50002, Expire: 30 * time.Second, MaxKbps: 256}, nil
}

func TestRequestsAddressedToAnyRelayJID(t *testing.T) {
	// node@relay and a full JID: the answer comes from where it was sent.
	for _, to := range []string{"node@relay.example.org", "relay.example.org/res", "relay@relay.example.org/x"} {
		_, h, _ := newTestService(&fakeAllocator{left: 1})
		r, raw := handle(t, h, `<iq type='get' id='a' from='alice@example.org/phone' to='`+to+`'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`)
		if r.Type != "result" || r.From != to {
			t.Errorf("to=%s: %s", to, raw)
		}
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name, stanza, typ, cond string
		alloc                   *fakeAllocator
	}{
		{"tcp", `<iq type='get' id='e' ` + client + `><channel xmlns='http://jabber.org/protocol/jinglenodes#channel' protocol='tcp'/></iq>`, "cancel", "feature-not-implemented", &fakeAllocator{left: 1}},
		{"pool exhausted", `<iq type='get' id='e' ` + client + `><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`, "wait", "resource-constraint", &fakeAllocator{}},
		{"draining", `<iq type='get' id='e' ` + client + `><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`, "cancel", "service-unavailable", &fakeAllocator{err: channel.ErrDraining}},
		{"out of descriptors", `<iq type='get' id='e' ` + client + `><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`, "wait", "resource-constraint", &fakeAllocator{err: fmt.Errorf("allocate channel: socket: %w", syscall.EMFILE)}},
		{"bind failure", `<iq type='get' id='e' ` + client + `><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`, "wait", "internal-server-error", &fakeAllocator{err: errors.New("bind: permission denied")}},
		{"bad protocol", `<iq type='get' id='e' ` + client + `><channel xmlns='http://jabber.org/protocol/jinglenodes#channel' protocol='sctp'/></iq>`, "modify", "bad-request", &fakeAllocator{left: 1}},
		{"empty protocol", `<iq type='get' id='e' ` + client + `><channel xmlns='http://jabber.org/protocol/jinglenodes#channel' protocol=''/></iq>`, "modify", "bad-request", &fakeAllocator{left: 1}},
		{"two payloads", `<iq type='get' id='e' ` + client + `><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`, "modify", "bad-request", &fakeAllocator{left: 2}},
		{"no payload", `<iq type='get' id='e' ` + client + `></iq>`, "modify", "bad-request", &fakeAllocator{left: 1}},
		{"unknown type", `<iq type='fetch' id='e' ` + client + `><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`, "modify", "bad-request", &fakeAllocator{left: 1}},
		{"nesting bomb", `<iq type='get' id='e' ` + client + `><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'>` + strings.Repeat("<a>", 40) + strings.Repeat("</a>", 40) + `</channel></iq>`, "modify", "bad-request", &fakeAllocator{left: 1}},
		{"element bomb", `<iq type='get' id='e' ` + client + `><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'>` + strings.Repeat("<a/>", 300) + `</channel></iq>`, "modify", "bad-request", &fakeAllocator{left: 1}},
		{"attribute bomb", `<iq type='get' id='e' ` + client + `><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'><b` + attrBomb(100) + `/></channel></iq>`, "modify", "bad-request", &fakeAllocator{left: 1}},
		{"text bomb", `<iq type='get' id='e' ` + client + `><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'><c>` + strings.Repeat("x", 20000) + `</c></channel></iq>`, "modify", "bad-request", &fakeAllocator{left: 1}},
		{"bad from", `<iq type='get' id='e' from='@@@' to='relay.example.org'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`, "modify", "bad-request", &fakeAllocator{left: 1}},
		{"no sender", `<iq type='get' id='e' to='relay.example.org'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`, "modify", "bad-request", &fakeAllocator{left: 1}},
		{"from the relay itself", `<iq type='get' id='e' from='relay.example.org' to='relay.example.org'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`, "cancel", "forbidden", &fakeAllocator{left: 1}},
		{"from a resource of the relay's domain", `<iq type='get' id='e' from='relay.example.org/x' to='relay.example.org'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`, "cancel", "forbidden", &fakeAllocator{left: 1}},
		{"unknown payload", `<iq type='get' id='e' ` + client + `><query xmlns='jabber:iq:version'/></iq>`, "cancel", "service-unavailable", &fakeAllocator{left: 1}},
		{"services set", `<iq type='set' id='e' ` + client + `><services xmlns='http://jabber.org/protocol/jinglenodes'/></iq>`, "cancel", "service-unavailable", &fakeAllocator{left: 1}},
		{"disco node", `<iq type='get' id='e' ` + client + `><query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>`, "cancel", "item-not-found", &fakeAllocator{left: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, h, _ := newTestService(c.alloc)
			r, raw := handle(t, h, c.stanza)
			if r.Type != "error" || r.ID != "e" || r.Error == nil {
				t.Fatalf("answer %s", raw)
			}
			if r.Error.Type != c.typ || r.Error.condition() != c.cond {
				t.Fatalf("error %s/%s, want %s/%s: %s", r.Error.Type, r.Error.condition(), c.typ, c.cond, raw)
			}
			if c.alloc.err == nil && c.cond != "resource-constraint" && c.alloc.calls != 0 {
				t.Fatalf("allocated %d channels for a refused request", c.alloc.calls)
			}
		})
	}
}

func TestResponsesAndNonIQsAreNotAnswered(t *testing.T) {
	_, h, _ := newTestService(&fakeAllocator{left: 1})
	for _, s := range []string{
		`<iq type='result' id='r' ` + client + `/>`,
		`<iq type='error' id='r' ` + client + `><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`,
		`<message ` + client + `><body>hi</body></message>`,
		`<presence ` + client + `/>`,
		`<iq type='get' ` + client + `><ping xmlns='urn:xmpp:ping'/></iq>`, // no id: nothing to answer to
		// Two ids (not well-formed XML): no single id to answer to.
		`<iq type='get' id='a' id='b' ` + client + `><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`,
	} {
		if _, raw := handle(t, h, s); raw != "" {
			t.Errorf("%s answered with %s", s, raw)
		}
	}
}

func TestDiscoServicesPing(t *testing.T) {
	_, h, _ := newTestService(&fakeAllocator{left: 1})
	r, raw := handle(t, h, `<iq type='get' id='d' `+client+`><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
	if r.Type != "result" || len(r.Inner) != 1 {
		t.Fatalf("disco#info: %s", raw)
	}
	var identity bool
	feats := map[string]bool{}
	for _, el := range r.Inner[0].Inner {
		switch el.XMLName.Local {
		case "identity":
			c, _ := el.attr("category")
			ty, _ := el.attr("type")
			identity = c == "proxy" && ty == "relay"
		case "feature":
			v, _ := el.attr("var")
			feats[v] = true
		}
	}
	if !identity {
		t.Errorf("no proxy/relay identity: %s", raw)
	}
	for _, f := range []string{NS, NSChannel, NSDiscoInfo, NSDiscoItem, NSPing} {
		if !feats[f] {
			t.Errorf("feature %s missing: %s", f, raw)
		}
	}

	r, raw = handle(t, h, `<iq type='get' id='i' `+client+`><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`)
	if r.Type != "result" || len(r.Inner) != 1 || r.Inner[0].XMLName.Space != NSDiscoItem {
		t.Fatalf("disco#items: %s", raw)
	}

	r, raw = handle(t, h, `<iq type='get' id='p' `+client+`><ping xmlns='urn:xmpp:ping'/></iq>`)
	if r.Type != "result" || r.ID != "p" || len(r.Inner) != 0 {
		t.Fatalf("ping: %s", raw)
	}

	r, raw = handle(t, h, `<iq type='get' id='s' `+client+`><services xmlns='http://jabber.org/protocol/jinglenodes'/></iq>`)
	if r.Type != "result" || len(r.Inner) != 1 || len(r.Inner[0].Inner) != 1 {
		t.Fatalf("services: %s", raw)
	}
	relay := r.Inner[0].Inner[0]
	addr, _ := relay.attr("address")
	policy, _ := relay.attr("policy")
	proto, _ := relay.attr("protocol")
	if relay.XMLName.Local != "relay" || addr != "relay.example.org" || policy != "public" || proto != "udp" {
		t.Fatalf("services relay entry: %s", raw)
	}
}

func TestKilledEventGoesToRequester(t *testing.T) {
	svc, h, snd := newTestService(&fakeAllocator{left: 1})
	r, _ := handle(t, h, `<iq type='get' id='k' from='bob@example.org/laptop' to='node@relay.example.org'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`)
	id, _ := r.Inner[0].attr("id")
	svc.ChannelEnded(context.Background(), channel.End{Info: channel.Info{ID: id}, Reason: channel.EndExpired, Duration: 75 * time.Second})
	svc.ChannelEnded(context.Background(), channel.End{Info: channel.Info{ID: id}}) // once only
	svc.ChannelEnded(context.Background(), channel.End{Info: channel.Info{ID: "unknown"}})
	if len(snd.sent) != 1 {
		t.Fatalf("sent %d events: %q", len(snd.sent), snd.sent)
	}
	var ev reply
	if err := xml.Unmarshal([]byte(snd.sent[0]), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "set" || ev.To != "bob@example.org/laptop" || ev.From != "node@relay.example.org" || ev.ID == "" {
		t.Fatalf("event iq %s", snd.sent[0])
	}
	ch := ev.Inner[0]
	evName, _ := ch.attr("event")
	evID, _ := ch.attr("id")
	evTime, _ := ch.attr("time")
	if ch.XMLName.Space != NSEvent || evName != "killed" || evID != id || evTime != "75" {
		t.Fatalf("event payload %s", snd.sent[0])
	}
}

func TestKilledEventSendFailureIsHarmless(t *testing.T) {
	svc, h, snd := newTestService(&fakeAllocator{left: 1})
	snd.err = io.ErrClosedPipe
	r, _ := handle(t, h, `<iq type='get' id='k' `+client+`><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`)
	id, _ := r.Inner[0].attr("id")
	svc.ChannelEnded(context.Background(), channel.End{Info: channel.Info{ID: id}})
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if len(svc.owners) != 0 {
		t.Fatal("owner kept after the channel ended")
	}
}

func TestUnknownPublicAddress(t *testing.T) {
	alloc := &fakeAllocator{left: 1}
	svc := New(Config{Allocator: alloc, PublicHost: func() netip.Addr { return netip.Addr{} }})
	r, raw := handle(t, svc.Handler(&recordingSender{}, nil), `<iq type='get' id='u' `+client+`><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`)
	if r.Error == nil || r.Error.condition() != "service-unavailable" || alloc.calls != 0 {
		t.Fatalf("answer %s, allocations %d", raw, alloc.calls)
	}
}

func TestServicesListsTrackersRelaysAndSTUN(t *testing.T) {
	svc := New(Config{Allocator: &fakeAllocator{}, PublicHost: func() netip.Addr { return netip.MustParseAddr("203.0.113.7") },
		Listings: func() []Listing {
			return []Listing{
				{Kind: "tracker", Address: "tracker.example.net"},
				{Kind: "relay", Address: "relay.example.net", Protocol: "udp"},
				{Kind: "stun", Address: "203.0.113.7", Port: 3478},
			}
		}})
	h := svc.Handler(&recordingSender{}, nil)
	r, raw := handle(t, h, `<iq type='get' id='s' `+client+`><services xmlns='http://jabber.org/protocol/jinglenodes'/></iq>`)
	if r.Type != "result" || len(r.Inner[0].Inner) != 4 {
		t.Fatalf("services: %s", raw)
	}
	want := []string{"relay relay.example.org", "tracker tracker.example.net", "relay relay.example.net", "stun 203.0.113.7"}
	for i, e := range r.Inner[0].Inner {
		addr, _ := e.attr("address")
		policy, _ := e.attr("policy")
		if got := e.XMLName.Local + " " + addr; got != want[i] || policy != "public" {
			t.Errorf("entry %d: %s policy=%s, want %s", i, got, policy, want[i])
		}
	}
	if port, _ := r.Inner[0].Inner[3].attr("port"); port != "3478" {
		t.Errorf("stun port %q: %s", port, raw)
	}
}

func TestServicesLeaveOutADrainingRelay(t *testing.T) {
	accepting := true
	svc := New(Config{Allocator: &fakeAllocator{}, PublicHost: func() netip.Addr { return netip.MustParseAddr("203.0.113.7") },
		Listings:  func() []Listing { return []Listing{{Kind: "tracker", Address: "tracker.example.net"}} },
		Admission: admission.New(admission.Config{Draining: func() bool { return !accepting }})})
	h := svc.Handler(&recordingSender{}, nil)
	list := func() []string {
		r, raw := handle(t, h, `<iq type='get' id='s' `+client+`><services xmlns='http://jabber.org/protocol/jinglenodes'/></iq>`)
		if r.Type != "result" || len(r.Inner) != 1 {
			t.Fatalf("services: %s", raw)
		}
		var out []string
		for _, e := range r.Inner[0].Inner {
			addr, _ := e.attr("address")
			out = append(out, e.XMLName.Local+" "+addr)
		}
		return out
	}
	if got := strings.Join(list(), ", "); got != "relay relay.example.org, tracker tracker.example.net" {
		t.Fatalf("accepting: %s", got)
	}
	accepting = false
	if got := strings.Join(list(), ", "); got != "tracker tracker.example.net" {
		t.Fatalf("draining: %s", got)
	}
}

func TestDonorLimitRefusesAndHidesTheRelay(t *testing.T) {
	var limit error
	alloc := &fakeAllocator{left: 5}
	svc := New(Config{Allocator: alloc, PublicHost: func() netip.Addr { return netip.MustParseAddr("203.0.113.7") },
		Admission: admission.New(admission.Config{Quota: func() error { return limit }})})
	h := svc.Handler(&recordingSender{}, nil)
	channelReq := `<iq type='get' id='c' ` + client + `><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`
	servicesReq := `<iq type='get' id='s' ` + client + `><services xmlns='http://jabber.org/protocol/jinglenodes'/></iq>`
	if r, raw := handle(t, h, channelReq); r.Type != "result" {
		t.Fatalf("within limits: %s", raw)
	}
	limit = errors.New("data quota used up: the monthly quota of 3 GB is used up until 2026-12-01")
	r, raw := handle(t, h, channelReq)
	if r.Type != "error" || r.Error.Type != "wait" || r.Error.condition() != "resource-constraint" || !strings.Contains(raw, "monthly quota of 3 GB") {
		t.Fatalf("over the limit: %s", raw)
	}
	if alloc.calls != 1 {
		t.Fatalf("%d allocations, want only the first", alloc.calls)
	}
	if r, raw := handle(t, h, servicesReq); r.Type != "result" || len(r.Inner[0].Inner) != 0 {
		t.Fatalf("services over the limit list the relay: %s", raw)
	}
	if got := svc.Stats().Refused["resource_constraint"]; got != 1 {
		t.Fatalf("refused resource-constraint %d, want 1", got)
	}
	limit = nil
	if r, raw := handle(t, h, servicesReq); r.Type != "result" || len(r.Inner[0].Inner) != 1 {
		t.Fatalf("services back within limits: %s", raw)
	}
}

func TestRequestCounters(t *testing.T) {
	svc, h, _ := newTestService(&fakeAllocator{left: 1})
	handle(t, h, `<iq type='get' id='1' `+client+`><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`)
	handle(t, h, `<iq type='get' id='2' `+client+`><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`)
	handle(t, h, `<iq type='get' id='3' `+client+`><channel xmlns='http://jabber.org/protocol/jinglenodes#channel' protocol='tcp'/></iq>`)
	handle(t, h, `<iq type='get' id='4' `+client+`><channel xmlns='http://jabber.org/protocol/jinglenodes#channel' protocol='x'/></iq>`)
	st := svc.Stats()
	if st.Granted != 1 || st.Refused["resource_constraint"] != 1 || st.Refused["feature_not_implemented"] != 1 || st.Refused["bad_request"] != 1 || st.Refused["forbidden"] != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func attrBomb(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, " a%d='x'", i)
	}
	return b.String()
}

// TestClientAccountServesItsOwnerButNotItself: a relay on a donor's client
// account serves the donor's other devices (same bare JID, other
// resource) but refuses a request from its own full JID, which only a
// forging server could send.
func TestClientAccountServesItsOwnerButNotItself(t *testing.T) {
	alloc := &fakeAllocator{left: 2}
	svc := New(Config{Allocator: alloc, PublicHost: func() netip.Addr { return netip.MustParseAddr("203.0.113.7") }})
	h := svc.Handler(&recordingSender{addr: jid.MustParse("donor@example.net/relayd")}, nil)
	req := `<iq type='get' id='e' from='%s' to='donor@example.net/relayd' xmlns='jabber:client'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`
	if r, raw := handle(t, h, fmt.Sprintf(req, "donor@example.net/phone")); r.Type != "result" {
		t.Fatalf("the donor's phone: %s", raw)
	}
	r, raw := handle(t, h, fmt.Sprintf(req, "donor@example.net/relayd"))
	if r.Type != "error" || r.Error == nil || r.Error.condition() != "forbidden" {
		t.Fatalf("the relay's own JID: %s", raw)
	}
	if alloc.calls != 1 {
		t.Fatalf("%d allocations, want 1", alloc.calls)
	}
}
