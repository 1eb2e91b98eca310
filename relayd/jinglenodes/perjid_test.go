package jinglenodes

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/jnrelay/jnrelay/relayd/channel"
)

func TestPerJIDChannelLimitAndRelease(t *testing.T) {
	alloc := &fakeAllocator{left: 10}
	svc, h, _ := newTestService(alloc)
	svc.SetJIDLimits(JIDLimits{Channels: 2})
	req := func(from string) reply {
		r, _ := handle(t, h, `<iq type='get' id='c' from='`+from+`' to='relay.example.org'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`)
		return r
	}
	var ids []string
	for i, res := range []string{"a", "b"} { // two resources, one bare JID
		r := req("alice@example.net/" + res)
		if r.Type != "result" {
			t.Fatalf("channel %d refused: %+v", i, r)
		}
		id, _ := r.Inner[0].attr("id")
		ids = append(ids, id)
	}
	r, raw := handle(t, h, `<iq type='get' id='c' from='alice@example.net/c' to='relay.example.org'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`)
	if r.Type != "error" || r.Error.condition() != "policy-violation" || r.Error.Type != "wait" || !strings.Contains(raw, "already holds 2 channels") {
		t.Fatalf("third channel for one JID: %s", raw)
	}
	if r := req("bob@example.net/x"); r.Type != "result" {
		t.Fatalf("another JID refused: %+v", r)
	}
	// A channel ends: room again.
	svc.ChannelEnded(t.Context(), channel.End{Info: channel.Info{ID: ids[0]}})
	if r := req("alice@example.net/d"); r.Type != "result" {
		t.Fatalf("after a channel ended: %+v", r)
	}
	if got := svc.Stats().Refused["policy_violation"]; got != 1 {
		t.Fatalf("policy_violation refusals %d, want 1", got)
	}
}

func TestPerJIDRequestRate(t *testing.T) {
	p := newPerJID()
	p.setLimits(JIDLimits{RequestsPerMinute: 3})
	alice, bob := jid.MustParse("alice@example.net/a"), jid.MustParse("bob@example.net/b")
	now := time.Unix(1000, 0)
	for i := range 3 {
		if err := p.reserve(alice, now); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if err := p.reserve(alice, now); err == nil || !strings.Contains(err.Error(), "3 a minute") {
		t.Fatalf("fourth request in a burst: %v", err)
	}
	if err := p.reserve(bob, now); err != nil {
		t.Fatalf("another JID: %v", err)
	}
	if err := p.reserve(alice, now.Add(20*time.Second)); err != nil { // one token back after 20 s
		t.Fatalf("after 20 s: %v", err)
	}
}

func TestPerJIDTableIsBounded(t *testing.T) {
	p := newPerJID()
	p.setLimits(JIDLimits{RequestsPerMinute: 10})
	holder := jid.MustParse("holder@example.net")
	now := time.Unix(1000, 0)
	if err := p.reserve(holder, now); err != nil { // holds a channel: never dropped
		t.Fatal(err)
	}
	for i := range maxTrackedJIDs + 100 {
		// Each asks, and its allocation fails (or its channel ends).
		from := jid.MustParse(fmt.Sprintf("u%d@flood%d.example", i, i))
		if err := p.reserve(from, now.Add(time.Duration(i))); err != nil {
			t.Fatal(err)
		}
		p.release(from)
	}
	if n, domains := p.tracked(); n > maxTrackedJIDs || domains != 1 {
		t.Fatalf("%d requesters and %d domains tracked, bounds %d and 1 (the holder's)", n, domains, maxTrackedJIDs)
	}
	p.mu.Lock()
	st := p.jids[holder.Bare().String()]
	p.mu.Unlock()
	if st == nil || st.channels != 1 {
		t.Fatalf("the requester holding a channel was dropped: %+v", st)
	}
}

func TestNoLimitsAdmitEverything(t *testing.T) {
	p := newPerJID()
	alice := jid.MustParse("alice@example.net/a")
	for i := range 100 {
		if err := p.reserve(alice, time.Now()); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	for range 100 {
		p.release(alice)
	}
	if _, domains := p.tracked(); domains != 0 {
		t.Fatalf("%d domains tracked once every channel was released", domains)
	}
}

// TestPerDomainShare is the donor-safety case: 16 JIDs of one domain, each
// within its own limit of 16 channels, ask for 256 channels of a relay of
// 100 whose domain share is 25. The domain gets 25 (its subdomains count
// with it) and then policy-violation; another domain still gets channels,
// and the domain gets one again when one of its channels ends.
func TestPerDomainShare(t *testing.T) {
	const capacity, share = 100, 25
	alloc := &fakeAllocator{left: capacity}
	svc, h, _ := newTestService(alloc)
	svc.SetJIDLimits(JIDLimits{Channels: 16, RequestsPerMinute: 1000, DomainChannels: share})
	ask := func(from string) (reply, string) {
		return handle(t, h, `<iq type='get' id='c' from='`+from+`' to='relay.example.org'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`)
	}
	var granted []string
	refused := 0
	for i := range 16 {
		for j := range 16 {
			// Half the JIDs on subdomains: a wildcard record makes as many
			// XMPP domains as one likes.
			from := fmt.Sprintf("u%d@evil.example/r%d", i, j)
			if i%2 == 1 {
				from = fmt.Sprintf("u%d@s%d.evil.example/r%d", i, i, j)
			}
			r, raw := ask(from)
			switch {
			case r.Type == "result":
				id, _ := r.Inner[0].attr("id")
				granted = append(granted, id)
			case r.Error.condition() == "policy-violation" && r.Error.Type == "wait" &&
				strings.Contains(raw, "requesters of evil.example already hold 25 channels"):
				refused++
			default:
				t.Fatalf("request %d from %s: %s", i*16+j, from, raw)
			}
		}
	}
	if len(granted) != share || refused != 256-share {
		t.Fatalf("one domain got %d channels (%d refused), want its share %d", len(granted), refused, share)
	}
	for i := range 10 {
		if r, raw := ask(fmt.Sprintf("user%d@example.net/phone", i)); r.Type != "result" {
			t.Fatalf("another domain's request %d refused beside the full one: %s", i, raw)
		}
	}
	if r, _ := ask("late@evil.example/x"); r.Type != "error" {
		t.Fatal("the full domain got a channel")
	}
	svc.ChannelEnded(t.Context(), channel.End{Info: channel.Info{ID: granted[0]}})
	if r, raw := ask("late@evil.example/x"); r.Type != "result" {
		t.Fatalf("after one of the domain's channels ended: %s", raw)
	}
	st := svc.Stats()
	if st.Refused["domain_limit"] != 256-share+1 || st.Refused["policy_violation"] != 0 || st.Granted != share+10+1 {
		t.Fatalf("stats %+v", st)
	}
}

// Concurrent requests never together exceed a limit: the check and the
// count are one step.
func TestPerDomainShareConcurrent(t *testing.T) {
	p := newPerJID()
	p.setLimits(JIDLimits{Channels: 2, DomainChannels: 10})
	var admitted atomic.Int32
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			for j := range 4 { // two per JID at most
				if p.reserve(jid.MustParse(fmt.Sprintf("u%d@evil.example/%d", i, j)), time.Now()) == nil {
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

// A reservation whose allocation fails is given back.
func TestFailedAllocationReleases(t *testing.T) {
	alloc := &fakeAllocator{left: 1}
	svc, h, _ := newTestService(alloc)
	svc.SetJIDLimits(JIDLimits{Channels: 1, DomainChannels: 1})
	ask := func() reply {
		r, _ := handle(t, h, `<iq type='get' id='c' from='alice@example.net/a' to='relay.example.org'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`)
		return r
	}
	alloc.err = channel.ErrPoolExhausted
	for range 3 {
		if r := ask(); r.Type != "error" || r.Error.condition() != "resource-constraint" {
			t.Fatalf("with no ports: %+v", r)
		}
	}
	alloc.err = nil
	if r := ask(); r.Type != "result" {
		t.Fatalf("failed allocations kept their reservations: %+v", r)
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
