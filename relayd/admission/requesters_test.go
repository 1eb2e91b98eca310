package admission

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mellium.im/xmpp/jid"
)

// fakeClock is a Gate's clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// newTestGate returns a Gate with limits l on a clock standing at
// 1000 s after the epoch.
func newTestGate(l Limits) (*Gate, *fakeClock) {
	clock := &fakeClock{now: time.Unix(1000, 0)}
	g := New(Config{Now: clock.Now})
	g.SetLimits(l)
	return g, clock
}

func reserve(g *Gate, from string) (*Ticket, error) {
	return g.Reserve(Request{Requester: jid.MustParse(from)})
}

func TestPerJIDRequestRate(t *testing.T) {
	g, clock := newTestGate(Limits{RequesterRequestsPerMinute: 3})
	for i := range 3 {
		if _, err := reserve(g, "alice@example.net/a"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	_, err := reserve(g, "alice@example.net/a")
	if r, ok := err.(*Refusal); !ok || r.Reason != RequesterRate || !strings.Contains(err.Error(), "3 a minute") {
		t.Fatalf("fourth request in a burst: %v", err)
	}
	if _, err := reserve(g, "bob@example.net/b"); err != nil {
		t.Fatalf("another JID: %v", err)
	}
	clock.Set(clock.Now().Add(20 * time.Second)) // one token back after 20 s
	if _, err := reserve(g, "alice@example.net/a"); err != nil {
		t.Fatalf("after 20 s: %v", err)
	}
}

func TestPerJIDTableIsBounded(t *testing.T) {
	g, clock := newTestGate(Limits{RequesterRequestsPerMinute: 10})
	holder := jid.MustParse("holder@example.net")
	start := clock.Now()
	if _, err := g.Reserve(Request{Requester: holder}); err != nil { // holds a channel: never dropped
		t.Fatal(err)
	}
	for i := range maxTrackedJIDs + 100 {
		// Each asks, and its allocation fails.
		clock.Set(start.Add(time.Duration(i)))
		ticket, err := reserve(g, fmt.Sprintf("u%d@flood%d.example", i, i))
		if err != nil {
			t.Fatal(err)
		}
		ticket.Cancel()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if n, domains := g.requesters.tracked(); n > maxTrackedJIDs || domains != 1 {
		t.Fatalf("%d requesters and %d domains tracked, bounds %d and 1 (the holder's)", n, domains, maxTrackedJIDs)
	}
	if st := g.requesters.jids[holder.Bare().String()]; st == nil || st.channels != 1 {
		t.Fatalf("the requester holding a channel was dropped: %+v", st)
	}
}

func TestNoLimitsAdmitEverything(t *testing.T) {
	g := New(Config{})
	var tickets []*Ticket
	for i := range 100 {
		ticket, err := reserve(g, "alice@example.net/a")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		ticket.Commit(fmt.Sprint(i))
		tickets = append(tickets, ticket)
	}
	for _, ticket := range tickets {
		ticket.Release()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, domains := g.requesters.tracked(); domains != 0 || g.held != 0 {
		t.Fatalf("%d domains tracked and %d channels held once every channel was released", domains, g.held)
	}
}

// Concurrent requests never together exceed a limit: the check and the
// count are one step.
func TestPerDomainShareConcurrent(t *testing.T) {
	g := New(Config{})
	g.SetLimits(Limits{RequesterChannels: 2, DomainChannels: 10})
	var admitted atomic.Int32
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			for j := range 4 { // two per JID at most
				if _, err := reserve(g, fmt.Sprintf("u%d@evil.example/%d", i, j)); err == nil {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := admitted.Load(); n != 10 {
		t.Fatalf("%d channels reserved concurrently, the domain's share is 10", n)
	}
}

func TestPerJIDChannels(t *testing.T) {
	g, _ := newTestGate(Limits{RequesterChannels: 2})
	first, err := reserve(g, "alice@example.net/a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reserve(g, "alice@example.net/b"); err != nil { // another resource, same bare JID
		t.Fatal(err)
	}
	_, err = reserve(g, "alice@example.net/c")
	if r, ok := err.(*Refusal); !ok || r.Reason != RequesterChannels || !strings.Contains(r.Text, "alice@example.net already holds 2 channels") {
		t.Fatalf("third channel for one JID: %v", err)
	}
	if _, err := reserve(g, "bob@example.net/x"); err != nil {
		t.Fatalf("another JID: %v", err)
	}
	first.Commit("c1")
	first.Release()
	if _, err := reserve(g, "alice@example.net/d"); err != nil {
		t.Fatalf("after a channel ended: %v", err)
	}
}

func TestPerDomainShare(t *testing.T) {
	g, _ := newTestGate(Limits{DomainChannels: 2})
	var held []*Ticket
	for _, from := range []string{"a@evil.example", "b@sub.evil.example"} { // subdomains count with it
		ticket, err := reserve(g, from)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, ticket)
	}
	_, err := reserve(g, "c@other.evil.example")
	if r, ok := err.(*Refusal); !ok || r.Reason != DomainShare || r.Text != "requesters of evil.example already hold 2 channels, the most one domain may hold" {
		t.Fatalf("third channel of one domain: %v", err)
	}
	if _, err := reserve(g, "a@example.net"); err != nil {
		t.Fatalf("another domain: %v", err)
	}
	held[0].Cancel()
	if _, err := reserve(g, "c@other.evil.example"); err != nil {
		t.Fatalf("after a cancelled reservation: %v", err)
	}
}

func TestDomainOf(t *testing.T) {
	for in, want := range map[string]string{
		"alice@example.net/x":         "example.net",
		"bob@chat.example.net":        "example.net",
		"carol@a.b.example.co.uk":     "example.co.uk",
		"dave@localhost":              "localhost",
		"eve@relay.localhost":         "relay.localhost",
		"frank@[2001:db8::1]":         "[2001:db8::1]",
		"grace@203.0.113.7":           "203.0.113.7",
		"conversations.im":            "conversations.im",
		"heidi@user.github.io/laptop": "github.io", // grouped too widely: the price of no public suffix list
		"ivan@chat.example.com.au":    "example.com.au",
		"judy@example.ne.jp":          "example.ne.jp",
		"mallory@evil.co":             "evil.co",
		"x@a.b.c.example.org":         "example.org",
	} {
		if got := domainOf(jid.MustParse(in)); got != want {
			t.Errorf("domainOf(%s) = %q, want %q", in, got, want)
		}
	}
}
