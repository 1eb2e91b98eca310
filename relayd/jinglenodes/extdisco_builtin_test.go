package jinglenodes

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"mellium.im/xmpp/jid"
)

func TestExtDiscoBuiltinTURN(t *testing.T) {
	minted := map[string]jid.JID{}
	ext := &External{TURN: &TURN{Builtin: true, TCP: true, Port: 3479, Transport: "udp", Secret: []byte("s3cret"), TTL: time.Hour,
		Minted: func(id string, requester jid.JID, _ time.Time) { minted[id] = requester }}}
	svc := New(Config{Allocator: &fakeAllocator{}, PublicHost: func() netip.Addr { return netip.MustParseAddr("203.0.113.7") },
		External: func() External { return *ext }})
	h := svc.Handler(&recordingSender{}, nil)
	r, raw := handle(t, h, iqFrom("a@example.org/b", `<services xmlns='urn:xmpp:extdisco:2' type='turn'/>`))
	if r.Type != "result" || len(r.Inner[0].Inner) != 2 {
		t.Fatalf("services: %s", raw)
	}
	for i, transport := range []string{"udp", "tcp"} {
		e := r.Inner[0].Inner[i]
		for attr, want := range map[string]string{"host": "203.0.113.7", "port": "3479", "transport": transport} {
			if got, _ := e.attr(attr); got != want {
				t.Errorf("turn %s=%q, want %q: %s", attr, got, want, raw)
			}
		}
		user, _ := e.attr("username")
		pass, _ := e.attr("password")
		checkTURNCredentials(t, user, pass, time.Hour)
		_, id, _ := strings.Cut(user, ":")
		if got := minted[id]; got.String() != "a@example.org/b" {
			t.Fatalf("credential %s recorded for %q", id, got)
		}
	}
	// The Jingle Nodes credentials request, over TCP.
	r, raw = handle(t, h, iqFrom("a@example.org/b", `<turn xmlns='http://jabber.org/protocol/jinglenodes#turncredentials' protocol='tcp'/>`))
	if uri, _ := r.Inner[0].attr("uri"); r.Type != "result" || uri != "turn:203.0.113.7:3479?transport=tcp" {
		t.Fatalf("turncredentials: %s", raw)
	}
	if len(minted) != 2 {
		t.Fatalf("%d credentials recorded, want 2 (one per answer)", len(minted))
	}
}
