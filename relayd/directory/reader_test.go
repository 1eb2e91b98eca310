package directory

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
)

// clock is a settable clock for the reader.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func relayItem(addr string, free int, updated time.Time) Item {
	return Item{JID: jid.MustParse(addr), Policy: "public", JingleNodes: true, Free: free, Total: 10,
		Reachability: "public", Status: StatusOK, Updated: updated}
}

func testReader(f *fakeService, c *clock, nodes ...string) *Reader {
	var ns []Node
	for _, n := range nodes {
		ns = append(ns, Node{Service: jid.MustParse("pubsub.example.org"), Node: n})
	}
	return NewReader(ReaderConfig{Nodes: ns, Refresh: time.Minute, Session: func(Node) Requester { return f },
		Self: func() []jid.JID { return []jid.JID{f.addr} }, Probe: ChannelProbe, Now: c.Now})
}

func listedAddrs(r *Reader, country string) []string {
	var out []string
	for _, it := range r.Listed(Near{Country: country}, 10) {
		out = append(out, it.JID.String())
	}
	return out
}

func TestReaderTrustAndRanking(t *testing.T) {
	c := &clock{now: testNow}
	f := newFake(t, "tracker@example.org/t", testNode)
	f.put(testNode, "a.example.org", "a.example.org", relayItem("a.example.org", 2, testNow))
	b := relayItem("b.example.org", 5, testNow)
	b.Country = "FR"
	f.put(testNode, "b.example.org", "b.example.org", b)
	f.put(testNode, "c.example.org", "mallory@example.org", relayItem("c.example.org", 9, testNow))                 // forged
	f.put(testNode, "d.example.org", "x.example.org", relayItem("e.example.org", 9, testNow))                       // id is not the jid
	f.put(testNode, "full.example.org", "full.example.org", relayItem("full.example.org", 0, testNow))              // no room
	f.put(testNode, "tracker@example.org/t", "tracker@example.org", relayItem("tracker@example.org/t", 9, testNow)) // itself
	r := testReader(f, c, testNode)
	r.step(context.Background())
	if got, want := listedAddrs(r, ""), []string{"b.example.org", "a.example.org"}; !slices.Equal(got, want) {
		t.Errorf("listed %q, want %q", got, want)
	}
	if got, want := listedAddrs(r, "DE"), []string{"b.example.org", "a.example.org"}; !slices.Equal(got, want) {
		t.Errorf("listed near DE %q, want %q", got, want)
	}
	f.put(testNode, "g.example.org", "g.example.org", func() Item { it := relayItem("g.example.org", 1, testNow); it.Country = "DE"; return it }())
	r.fetch(context.Background(), f, r.cfg.Nodes[0])
	if got, want := listedAddrs(r, "DE"), []string{"g.example.org", "b.example.org", "a.example.org"}; !slices.Equal(got, want) {
		t.Errorf("listed near DE %q, want %q", got, want)
	}
	if len(f.subscribed) != 1 || f.subscribed[0] != testNode+" tracker@example.org/t" {
		t.Errorf("subscriptions %q", f.subscribed)
	}
	r.Unsubscribe(context.Background())
	if len(f.subscribed) != 0 {
		t.Errorf("subscriptions after Unsubscribe: %q", f.subscribed)
	}
}

func TestReaderProbesUnverified(t *testing.T) {
	c := &clock{now: testNow}
	f := newFake(t, "tracker@example.org/t", testNode)
	f.noPublisher = true
	f.put(testNode, "a.example.org", "", relayItem("a.example.org", 2, testNow))
	r := testReader(f, c, testNode)
	r.fetch(context.Background(), f, r.cfg.Nodes[0])
	if got := listedAddrs(r, ""); len(got) != 0 {
		t.Errorf("unprobed relay listed: %q", got)
	}
	r.probe(context.Background(), f)
	if got := listedAddrs(r, ""); !slices.Equal(got, []string{"a.example.org"}) {
		t.Errorf("after a good probe: %q", got)
	}
	f.put(testNode, "b.example.org", "", relayItem("b.example.org", 2, testNow))
	f.probeErr = errors.New("no channel")
	r.fetch(context.Background(), f, r.cfg.Nodes[0])
	r.probe(context.Background(), f)
	if got := listedAddrs(r, ""); !slices.Equal(got, []string{"a.example.org"}) {
		t.Errorf("after a failed probe: %q", got)
	}
	if !slices.Equal(f.probes, []string{"a.example.org", "b.example.org"}) {
		t.Errorf("probes %q: each unverified item once", f.probes)
	}
}

func TestReaderForgetsStale(t *testing.T) {
	c := &clock{now: testNow}
	f := newFake(t, "tracker@example.org/t", testNode)
	f.put(testNode, "a.example.org", "a.example.org", relayItem("a.example.org", 2, testNow))
	r := testReader(f, c, testNode)
	r.fetch(context.Background(), f, r.cfg.Nodes[0])
	c.add(3*time.Minute + time.Second)
	if got := listedAddrs(r, ""); len(got) != 0 {
		t.Errorf("stale relay listed: %q", got)
	}
	r.expire()
	if len(r.relays) != 0 {
		t.Errorf("stale relay kept")
	}
}

// notify hands r a notification message as a session would.
func notify(t *testing.T, h xmpp.Handler, from, event string) {
	t.Helper()
	doc := `<message xmlns='jabber:client' from='` + from + `' to='tracker@example.org/t' type='headline'><event xmlns='http://jabber.org/protocol/pubsub#event'>` + event + `</event></message>`
	d := xml.NewDecoder(strings.NewReader(doc))
	tok, err := d.Token()
	if err != nil {
		t.Fatal(err)
	}
	start := tok.(xml.StartElement)
	// Children and the end element, as mellium hands a stanza over.
	if err := h.HandleXMPP(struct {
		xml.TokenReader
		xmlstream.Encoder
	}{d, nil}, &start); err != nil {
		t.Fatal(err)
	}
}

type nopHandler struct{ calls int }

func (h *nopHandler) HandleXMPP(xmlstream.TokenReadEncoder, *xml.StartElement) error {
	h.calls++
	return nil
}

func TestReaderNotificationsAndMirrors(t *testing.T) {
	c := &clock{now: testNow}
	f := newFake(t, "tracker@example.org/t", "n1", "n2")
	r := testReader(f, c, "n1", "n2")
	next := &nopHandler{}
	h := r.Handler(next)
	item := `<item id='a.example.org' publisher='a.example.org'>` + encode(t, relayItem("a.example.org", 2, testNow).TokenReader()) + `</item>`
	notify(t, h, "pubsub.example.org", `<items node='n1'>`+item+`</items>`)
	notify(t, h, "pubsub.example.org", `<items node='n2'>`+item+`</items>`)
	notify(t, h, "elsewhere.example.org", `<items node='n1'><retract id='a.example.org'/></items>`) // not the service
	if got := listedAddrs(r, ""); !slices.Equal(got, []string{"a.example.org"}) {
		t.Fatalf("listed %q", got)
	}
	// Retracted from one mirror: still in the other.
	notify(t, h, "pubsub.example.org", `<items node='n1'><retract id='a.example.org'/></items>`)
	if got := listedAddrs(r, ""); !slices.Equal(got, []string{"a.example.org"}) {
		t.Fatalf("after one mirror's retraction: %q", got)
	}
	stopped := relayItem("a.example.org", 2, testNow)
	stopped.Status = StatusStopped
	notify(t, h, "pubsub.example.org", `<items node='n2'><item id='a.example.org' publisher='a.example.org'>`+encode(t, stopped.TokenReader())+`</item></items>`)
	if got := listedAddrs(r, ""); len(got) != 0 {
		t.Fatalf("after both mirrors dropped it: %q", got)
	}
	if next.calls != 0 {
		t.Errorf("messages passed on: %d", next.calls)
	}
	iq := xml.StartElement{Name: xml.Name{Local: "iq"}}
	if err := h.HandleXMPP(nil, &iq); err != nil || next.calls != 1 {
		t.Errorf("an IQ was not passed on: %v %d", err, next.calls)
	}
}

func TestReaderBounded(t *testing.T) {
	c := &clock{now: testNow}
	f := newFake(t, "tracker@example.org/t", "n1")
	r := testReader(f, c, "n1")
	var entries []Entry
	for i := range MaxKnown + 5 {
		a := "r" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + "." + time.Duration(i).String() + ".example.org"
		it := relayItem(a, 1, testNow.Add(time.Duration(i)*time.Millisecond))
		entries = append(entries, Entry{ID: a, Publisher: a, Item: it})
	}
	r.apply(r.cfg.Nodes[0], entries)
	if len(r.relays) != MaxKnown {
		t.Errorf("kept %d relays, want %d", len(r.relays), MaxKnown)
	}
}

// Healthy relays come first (they granted this reader's probe, or say
// the Internet reaches them), then those of the reader's country, then
// by free channels; a relay failing the probe is not listed.
func TestReaderRanksHealthyFirst(t *testing.T) {
	c := &clock{now: testNow}
	f := newFake(t, "tracker@example.org/t", testNode)
	near := relayItem("near.example.org", 9, testNow)
	near.Country, near.Reachability = "DE", "behind_nat"
	far := relayItem("far.example.org", 1, testNow)
	far.Country = "FR"
	for _, it := range []Item{near, far, relayItem("bad.example.org", 5, testNow)} {
		f.put(testNode, it.JID.String(), it.JID.String(), it)
	}
	r := testReader(f, c, testNode)
	r.cfg.Probe = func(ctx context.Context, q Requester, relay jid.JID) error {
		if relay.String() == "bad.example.org" {
			return errors.New("no channel")
		}
		return ChannelProbe(ctx, q, relay)
	}
	r.fetch(context.Background(), f, r.cfg.Nodes[0])
	if got, want := listedAddrs(r, "DE"), []string{"bad.example.org", "far.example.org", "near.example.org"}; !slices.Equal(got, want) {
		t.Errorf("before probing, listed %q, want %q", got, want)
	}
	r.probe(context.Background(), f)
	r.probe(context.Background(), f)
	if got, want := listedAddrs(r, "DE"), []string{"near.example.org", "far.example.org"}; !slices.Equal(got, want) {
		t.Errorf("after probing, listed %q, want %q", got, want)
	}
	if got := r.Listed(Near{Country: "DE"}, 1); len(got) != 1 || got[0].JID.String() != "near.example.org" {
		t.Errorf("bounded to one: %v", got)
	}
}

// Five trackers read a directory of 20 relays and the trackers' own
// items: each relay is probed by DefaultProbers of them, never by all,
// at most maxProbesPerStep a step, and again after a refresh period.
func TestReaderSpreadsProbes(t *testing.T) {
	c := &clock{now: testNow}
	var trackers, relays []Item
	for i := range 5 {
		it := relayItem(fmt.Sprintf("tracker%d.example.org", i), 5, testNow)
		it.Tracker = true
		trackers = append(trackers, it)
	}
	for i := range 20 {
		relays = append(relays, relayItem(fmt.Sprintf("relay%d.example.org", i), 5, testNow))
	}
	probers := map[string]int{}
	var readers []*Reader
	var fakes []*fakeService
	for _, self := range trackers {
		f := newFake(t, self.JID.String(), testNode)
		for _, it := range append(append([]Item(nil), trackers...), relays...) {
			f.put(testNode, it.JID.String(), it.JID.String(), it)
		}
		r := testReader(f, c, testNode)
		r.fetch(context.Background(), f, r.cfg.Nodes[0])
		readers, fakes = append(readers, r), append(fakes, f)
	}
	probeAll := func() {
		for i, r := range readers {
			for range 50 {
				before := len(fakes[i].probes)
				r.probe(context.Background(), fakes[i])
				if n := len(fakes[i].probes) - before; n > maxProbesPerStep {
					t.Fatalf("%d probes in one step", n)
				} else if n == 0 {
					break
				}
			}
		}
	}
	probeAll()
	for _, f := range fakes {
		for _, p := range f.probes {
			probers[p]++
		}
		f.probes = nil
	}
	for _, it := range append(append([]Item(nil), trackers...), relays...) {
		if n := probers[it.JID.String()]; n != DefaultProbers {
			t.Errorf("%s probed by %d trackers, want %d", it.JID, n, DefaultProbers)
		}
	}
	probeAll() // nothing is due before a refresh period
	for i, f := range fakes {
		if len(f.probes) != 0 {
			t.Errorf("tracker %d probed again at once: %q", i, f.probes)
		}
	}
	c.add(time.Minute)
	probeAll()
	again := 0
	for _, f := range fakes {
		again += len(f.probes)
	}
	if want := DefaultProbers * (len(trackers) + len(relays)); again != want {
		t.Errorf("%d probes after a refresh period, want %d", again, want)
	}
}

// Among relays of the same health, those of the reader's country and
// region come first, then those of its country, then the others.
func TestReaderRanksNearestFirst(t *testing.T) {
	c := &clock{now: testNow}
	f := newFake(t, "tracker@example.org/t", testNode)
	at := func(addr, country, region string, free int) Item {
		it := relayItem(addr, free, testNow)
		it.Country, it.Region = country, region
		return it
	}
	for _, it := range []Item{at("fr.example.org", "FR", "Berlin area", 9), at("bavaria.example.org", "DE", "Bavaria", 8),
		at("berlin.example.org", "DE", "Berlin Area", 1), at("none.example.org", "", "", 7)} {
		f.put(testNode, it.JID.String(), it.JID.String(), it)
	}
	r := testReader(f, c, testNode)
	r.fetch(context.Background(), f, r.cfg.Nodes[0])
	names := func(near Near) []string {
		var out []string
		for _, it := range r.Listed(near, 10) {
			out = append(out, strings.TrimSuffix(it.JID.String(), ".example.org"))
		}
		return out
	}
	for near, want := range map[Near][]string{
		{Country: "DE", Region: "berlin area"}: {"berlin", "bavaria", "fr", "none"},
		{Country: "DE"}:                        {"bavaria", "berlin", "fr", "none"},
		{Region: "Berlin area"}:                {"fr", "bavaria", "none", "berlin"},
	} {
		if got := names(near); !slices.Equal(got, want) {
			t.Errorf("near %+v: %q, want %q", near, got, want)
		}
	}
}

// A verified relay of the share that fails its probe is kept but not
// listed, probed again a minute later (not a whole refresh period), and
// listed again once it passes.
func TestReaderReprobesAfterFailure(t *testing.T) {
	c := &clock{now: testNow}
	f := newFake(t, "tracker@example.org/t", testNode)
	f.put(testNode, "a.example.org", "a.example.org", relayItem("a.example.org", 2, testNow))
	r := testReader(f, c, testNode)
	r.cfg.Refresh = 5 * time.Minute
	r.fetch(context.Background(), f, r.cfg.Nodes[0])
	f.probeErr = errors.New("no channel")
	r.probe(context.Background(), f)
	if got := listedAddrs(r, ""); len(got) != 0 || len(r.relays) != 1 {
		t.Fatalf("after a failed probe: listed %q, kept %d", got, len(r.relays))
	}
	f.probeErr = nil
	c.add(probeRetry - time.Second)
	r.probe(context.Background(), f)
	if len(f.probes) != 1 {
		t.Fatalf("probed again before probeRetry: %q", f.probes)
	}
	c.add(time.Second)
	r.probe(context.Background(), f)
	if got := listedAddrs(r, ""); len(f.probes) != 2 || !slices.Equal(got, []string{"a.example.org"}) {
		t.Errorf("after probeRetry: probes %q, listed %q", f.probes, got)
	}
}

// A mirror that names no publisher, repeating a verified item, leaves it
// verified: no probe is needed, and the share's probe result stands.
func TestReaderMirrorWithoutPublisherKeepsTrust(t *testing.T) {
	c := &clock{now: testNow}
	f := newFake(t, "tracker@example.org/t", "n1", "n2")
	it := relayItem("a.example.org", 2, testNow)
	r := testReader(f, c, "n1", "n2")
	r.apply(r.cfg.Nodes[0], []Entry{{ID: "a.example.org", Publisher: "a.example.org", Item: it}})
	r.apply(r.cfg.Nodes[1], []Entry{{ID: "a.example.org", Item: it}})
	if k := r.relays["a.example.org"]; k == nil || k.trust != Verified {
		t.Fatalf("after the unnamed copy: %+v", k)
	}
	changed := it
	changed.Free = 1
	r.apply(r.cfg.Nodes[1], []Entry{{ID: "a.example.org", Item: changed}})
	if k := r.relays["a.example.org"]; k == nil || k.trust != Unverified {
		t.Fatalf("an unnamed copy saying something else: %+v", k)
	}
}
