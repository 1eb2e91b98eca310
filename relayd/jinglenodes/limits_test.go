package jinglenodes

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jnrelay/jnrelay/relayd/channel"

	"github.com/jnrelay/jnrelay/relayd/admission"
)

func TestPerJIDChannelLimitAndRelease(t *testing.T) {
	alloc := &fakeAllocator{left: 10}
	svc, h, _ := newTestService(alloc)
	svc.gate.SetLimits(admission.Limits{RequesterChannels: 2})
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

// TestPerDomainShare is the donor-safety case: 16 JIDs of one domain, each
// within its own limit of 16 channels, ask for 256 channels of a relay of
// 100 whose domain share is 25. The domain gets 25 (its subdomains count
// with it) and then policy-violation; another domain still gets channels,
// and the domain gets one again when one of its channels ends.
func TestPerDomainShare(t *testing.T) {
	const capacity, share = 100, 25
	alloc := &fakeAllocator{left: capacity}
	svc, h, _ := newTestService(alloc)
	svc.gate.SetLimits(admission.Limits{RequesterChannels: 16, RequesterRequestsPerMinute: 1000, DomainChannels: share})
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

// A reservation whose allocation fails is given back.
func TestFailedAllocationReleases(t *testing.T) {
	alloc := &fakeAllocator{left: 1}
	svc, h, _ := newTestService(alloc)
	svc.gate.SetLimits(admission.Limits{RequesterChannels: 1, DomainChannels: 1})
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
