package jinglenodes

import (
	"net/netip"
	"testing"
	"time"
)

// TestExtDiscoBuiltinTURNIPv6: a dual-stack built-in server is announced
// at the public IPv6 address as well, with the same credentials; without
// an IPv6 address (or when it is the public address itself) only once.
func TestExtDiscoBuiltinTURNIPv6(t *testing.T) {
	v6 := netip.MustParseAddr("2001:db8::7")
	ext := &External{TURN: &TURN{Builtin: true, TCP: true, Port: 3479, Transport: "udp", Secret: []byte("s3cret"), TTL: time.Hour,
		Host6: func() netip.Addr { return v6 }}}
	svc := New(Config{Allocator: &fakeAllocator{}, PublicHost: func() netip.Addr { return netip.MustParseAddr("203.0.113.7") },
		External: func() External { return *ext }})
	h := svc.Handler(&recordingSender{}, nil)
	r, raw := handle(t, h, iqFrom("a@example.org/b", `<services xmlns='urn:xmpp:extdisco:2' type='turn'/>`))
	want := [][2]string{{"203.0.113.7", "udp"}, {"203.0.113.7", "tcp"}, {"2001:db8::7", "udp"}, {"2001:db8::7", "tcp"}}
	if r.Type != "result" || len(r.Inner[0].Inner) != len(want) {
		t.Fatalf("services: %s", raw)
	}
	user0, _ := r.Inner[0].Inner[0].attr("username")
	for i, w := range want {
		e := r.Inner[0].Inner[i]
		host, _ := e.attr("host")
		transport, _ := e.attr("transport")
		user, _ := e.attr("username")
		if host != w[0] || transport != w[1] || user != user0 {
			t.Errorf("entry %d: %s over %s for %s, want %s over %s for %s: %s", i, host, transport, user, w[0], w[1], user0, raw)
		}
	}
	for _, none := range []netip.Addr{{}, netip.MustParseAddr("203.0.113.7")} {
		v6 = none
		if r, raw = handle(t, h, iqFrom("a@example.org/b", `<services xmlns='urn:xmpp:extdisco:2' type='turn'/>`)); len(r.Inner[0].Inner) != 2 {
			t.Fatalf("IPv6 host %v: %s", none, raw)
		}
	}
}
