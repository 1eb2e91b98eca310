package jinglenodes

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestExtDiscoBuiltinTURNOverTLS(t *testing.T) {
	public := netip.MustParseAddr("203.0.113.7")
	turnWith := func(tlsPort int, tlsHost string) *TURN {
		return &TURN{Builtin: true, TCP: true, Port: 3479, Transport: "udp", Secret: []byte("s3cret"), TTL: time.Hour,
			TLSPort: tlsPort, TLSHost: tlsHost}
	}
	handlerFor := func(tr *TURN) *Handler {
		svc := New(Config{Allocator: &fakeAllocator{}, PublicHost: func() netip.Addr { return public },
			External: func() External { return External{TURN: tr} }})
		return svc.Handler(&recordingSender{}, nil)
	}
	// At the public address when no name is configured; at the name
	// otherwise, which the certificate is for.
	for _, c := range []struct{ tlsHost, wantHost string }{{"", "203.0.113.7"}, {"turn.example.org", "turn.example.org"}} {
		h := handlerFor(turnWith(5349, c.tlsHost))
		r, raw := handle(t, h, iqFrom("a@example.org/b", `<services xmlns='urn:xmpp:extdisco:2'/>`))
		if r.Type != "result" || len(r.Inner[0].Inner) != 3 {
			t.Fatalf("services: %s", raw)
		}
		var users []string
		for i, want := range []map[string]string{
			{"type": "turn", "host": "203.0.113.7", "port": "3479", "transport": "udp"},
			{"type": "turn", "host": "203.0.113.7", "port": "3479", "transport": "tcp"},
			{"type": "turns", "host": c.wantHost, "port": "5349", "transport": "tcp"},
		} {
			e := r.Inner[0].Inner[i]
			for attr, v := range want {
				if got, _ := e.attr(attr); got != v {
					t.Errorf("entry %d %s=%q, want %q: %s", i, attr, got, v, raw)
				}
			}
			user, _ := e.attr("username")
			pass, _ := e.attr("password")
			checkTURNCredentials(t, user, pass, time.Hour)
			users = append(users, user)
		}
		if users[0] != users[2] {
			t.Errorf("turns entry with another credential (%s, %s): one is minted per answer", users[0], users[2])
		}
		// Filtered by type.
		r, raw = handle(t, h, iqFrom("a@example.org/b", `<services xmlns='urn:xmpp:extdisco:2' type='turns'/>`))
		if typ, _ := r.Inner[0].Inner[0].attr("type"); r.Type != "result" || len(r.Inner[0].Inner) != 1 || typ != "turns" {
			t.Fatalf("services type=turns: %s", raw)
		}
		r, raw = handle(t, h, iqFrom("a@example.org/b", `<credentials xmlns='urn:xmpp:extdisco:2'><service type='turns' host='`+c.wantHost+`'/></credentials>`))
		if typ, _ := r.Inner[0].Inner[0].attr("type"); r.Type != "result" || len(r.Inner[0].Inner) != 1 || typ != "turns" {
			t.Fatalf("credentials type=turns: %s", raw)
		}
		// The Jingle Nodes credentials request for TLS: a turns: URI.
		r, raw = handle(t, h, iqFrom("a@example.org/b", `<turn xmlns='http://jabber.org/protocol/jinglenodes#turncredentials' protocol='tls'/>`))
		want := "turns:" + c.wantHost + ":5349?transport=tcp"
		if uri, _ := r.Inner[0].attr("uri"); r.Type != "result" || uri != want {
			t.Fatalf("turncredentials tls: want uri %s: %s", want, raw)
		}
	}
	// Without TLS: no turns entry, and protocol tls is not offered.
	h := handlerFor(turnWith(0, ""))
	r, raw := handle(t, h, iqFrom("a@example.org/b", `<services xmlns='urn:xmpp:extdisco:2'/>`))
	if r.Type != "result" || len(r.Inner[0].Inner) != 2 || strings.Contains(raw, "turns") {
		t.Fatalf("services without TLS: %s", raw)
	}
	r, raw = handle(t, h, iqFrom("a@example.org/b", `<turn xmlns='http://jabber.org/protocol/jinglenodes#turncredentials' protocol='tls'/>`))
	if r.Type != "error" || !strings.Contains(raw, "item-not-found") {
		t.Fatalf("turncredentials tls without TLS: %s", raw)
	}
	r, raw = handle(t, h, iqFrom("a@example.org/b", `<services xmlns='urn:xmpp:extdisco:2' type='turns'/>`))
	if r.Type != "result" || len(r.Inner[0].Inner) != 0 {
		t.Fatalf("services type=turns without TLS: %s", raw)
	}
}
