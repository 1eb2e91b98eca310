package jinglenodes

import (
	"fmt"
	"strings"
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
		if err := p.admit(alice, now); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if err := p.admit(alice, now); err == nil || !strings.Contains(err.Error(), "3 a minute") {
		t.Fatalf("fourth request in a burst: %v", err)
	}
	if err := p.admit(bob, now); err != nil {
		t.Fatalf("another JID: %v", err)
	}
	if err := p.admit(alice, now.Add(20*time.Second)); err != nil { // one token back after 20 s
		t.Fatalf("after 20 s: %v", err)
	}
}

func TestPerJIDTableIsBounded(t *testing.T) {
	p := newPerJID()
	p.setLimits(JIDLimits{RequestsPerMinute: 10})
	holder := jid.MustParse("holder@example.net")
	p.granted(holder) // holds a channel: never dropped
	now := time.Unix(1000, 0)
	for i := range maxTrackedJIDs + 100 {
		if err := p.admit(jid.MustParse(fmt.Sprintf("u%d@flood.example", i)), now.Add(time.Duration(i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := p.tracked(); n > maxTrackedJIDs {
		t.Fatalf("%d requesters tracked, bound %d", n, maxTrackedJIDs)
	}
	p.mu.Lock()
	st := p.jids[holder.Bare().String()]
	p.mu.Unlock()
	if st == nil || st.channels != 1 {
		t.Fatalf("the requester holding a channel was dropped: %+v", st)
	}
}

func TestNoJIDLimitsTrackNothing(t *testing.T) {
	p := newPerJID()
	for i := range 100 {
		if err := p.admit(jid.MustParse(fmt.Sprintf("u%d@example.net", i)), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if n := p.tracked(); n != 0 {
		t.Fatalf("%d requesters tracked with no limits", n)
	}
}
