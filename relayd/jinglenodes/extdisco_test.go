package jinglenodes

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/jnrelay/jnrelay/relayd/admission"
)

func newExtService(turn bool, policy *admission.Policy) *Handler {
	ext := &External{STUNPort: 3478}
	if turn {
		ext.TURN = &TURN{Host: "turn.example.org", Port: 3478, Transport: "udp", Secret: []byte("s3cret"), TTL: time.Hour}
	}
	svc := New(Config{Allocator: &fakeAllocator{}, PublicHost: func() netip.Addr { return netip.MustParseAddr("203.0.113.7") }, External: func() External { return *ext }})
	return svc.Handler(&recordingSender{}, policy)
}

// checkTURNCredentials verifies a TURN REST username/password pair.
func checkTURNCredentials(t *testing.T, user, pass string, ttl time.Duration) {
	t.Helper()
	expiry, id, ok := strings.Cut(user, ":")
	if !ok || id == "" {
		t.Fatalf("username %q is not <expiry>:<id>", user)
	}
	exp, err := strconv.ParseInt(expiry, 10, 64)
	if err != nil {
		t.Fatalf("username %q: %v", user, err)
	}
	if d := time.Until(time.Unix(exp, 0)); d < ttl-time.Minute || d > ttl+time.Minute {
		t.Fatalf("credentials expire in %s, want about %s", d, ttl)
	}
	mac := hmac.New(sha1.New, []byte("s3cret"))
	mac.Write([]byte(user))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); pass != want {
		t.Fatalf("password %q, want %q", pass, want)
	}
}

func TestExtDiscoServices(t *testing.T) {
	h := newExtService(true, nil)
	r, raw := handle(t, h, iqFrom("a@example.org/b", `<services xmlns='urn:xmpp:extdisco:2'/>`))
	if r.Type != "result" || len(r.Inner) != 1 || r.Inner[0].XMLName.Space != NSExtDisco || len(r.Inner[0].Inner) != 2 {
		t.Fatalf("services: %s", raw)
	}
	stun, turn := r.Inner[0].Inner[0], r.Inner[0].Inner[1]
	for attr, want := range map[string]string{"type": "stun", "host": "203.0.113.7", "port": "3478", "transport": "udp"} {
		if got, _ := stun.attr(attr); got != want {
			t.Errorf("stun %s=%q, want %q: %s", attr, got, want, raw)
		}
	}
	user, _ := turn.attr("username")
	pass, _ := turn.attr("password")
	restricted, _ := turn.attr("restricted")
	host, _ := turn.attr("host")
	if host != "turn.example.org" || restricted != "1" {
		t.Fatalf("turn entry: %s", raw)
	}
	checkTURNCredentials(t, user, pass, time.Hour)

	// Filtered by type.
	r, raw = handle(t, h, iqFrom("a@example.org/b", `<services xmlns='urn:xmpp:extdisco:2' type='stun'/>`))
	if len(r.Inner[0].Inner) != 1 {
		t.Fatalf("type=stun: %s", raw)
	}
	// Credentials for the TURN service.
	r, raw = handle(t, h, iqFrom("a@example.org/b", `<credentials xmlns='urn:xmpp:extdisco:2'><service host='turn.example.org' type='turn'/></credentials>`))
	if r.Type != "result" || r.Inner[0].XMLName.Local != "credentials" || len(r.Inner[0].Inner) != 1 {
		t.Fatalf("credentials: %s", raw)
	}
	user, _ = r.Inner[0].Inner[0].attr("username")
	pass, _ = r.Inner[0].Inner[0].attr("password")
	checkTURNCredentials(t, user, pass, time.Hour)
	// Without TURN: only STUN, and credentials are not found.
	h = newExtService(false, nil)
	if r, raw := handle(t, h, iqFrom("a@example.org/b", `<services xmlns='urn:xmpp:extdisco:2'/>`)); len(r.Inner[0].Inner) != 1 {
		t.Fatalf("without TURN: %s", raw)
	}
	if r, raw := handle(t, h, iqFrom("a@example.org/b", `<credentials xmlns='urn:xmpp:extdisco:2'><service type='turn'/></credentials>`)); r.Error == nil || r.Error.condition() != "item-not-found" {
		t.Fatalf("credentials without TURN: %s", raw)
	}
}

func TestTURNCredentialsPolicy(t *testing.T) {
	h := newExtService(true, &admission.Policy{Deny: []jid.JID{jid.MustParse("example.net")}})
	r, raw := handle(t, h, iqFrom("x@example.net/y", `<services xmlns='urn:xmpp:extdisco:2'/>`))
	if len(r.Inner[0].Inner) != 1 || strings.Contains(raw, "password") {
		t.Fatalf("denied requester got TURN credentials: %s", raw)
	}
	if r, raw := handle(t, h, iqFrom("x@example.net/y", `<turn xmlns='http://jabber.org/protocol/jinglenodes#turncredentials' protocol='udp'/>`)); r.Error == nil || r.Error.condition() != "forbidden" {
		t.Fatalf("denied #turncredentials: %s", raw)
	}
}

func TestJingleNodesTURNCredentials(t *testing.T) {
	h := newExtService(true, nil)
	r, raw := handle(t, h, iqFrom("a@example.org/b", `<turn xmlns='http://jabber.org/protocol/jinglenodes#turncredentials' protocol='udp'/>`))
	if r.Type != "result" {
		t.Fatalf("turn: %s", raw)
	}
	el := r.Inner[0]
	uri, _ := el.attr("uri")
	ttl, _ := el.attr("ttl")
	user, _ := el.attr("username")
	pass, _ := el.attr("password")
	if uri != "turn:turn.example.org:3478?transport=udp" || ttl != "3600" {
		t.Fatalf("turn: %s", raw)
	}
	checkTURNCredentials(t, user, pass, time.Hour)
	for payload, cond := range map[string]string{
		`<turn xmlns='http://jabber.org/protocol/jinglenodes#turncredentials'/>`:                "bad-request",
		`<turn xmlns='http://jabber.org/protocol/jinglenodes#turncredentials' protocol='tcp'/>`: "item-not-found",
	} {
		if r, raw := handle(t, h, iqFrom("a@example.org/b", payload)); r.Error == nil || r.Error.condition() != cond {
			t.Errorf("%s: %s, want %s", payload, raw, cond)
		}
	}
	if r, raw := handle(t, newExtService(false, nil), iqFrom("a@example.org/b", `<turn xmlns='http://jabber.org/protocol/jinglenodes#turncredentials' protocol='udp'/>`)); r.Error == nil || r.Error.condition() != "service-unavailable" {
		t.Fatalf("without TURN: %s", raw)
	}
}

func TestServicesListsSTUN(t *testing.T) {
	r, raw := handle(t, newExtService(false, nil), iqFrom("a@example.org/b", `<services xmlns='http://jabber.org/protocol/jinglenodes'/>`))
	if len(r.Inner[0].Inner) != 2 || r.Inner[0].Inner[1].XMLName.Local != "stun" {
		t.Fatalf("services: %s", raw)
	}
	if port, _ := r.Inner[0].Inner[1].attr("port"); port != "3478" {
		t.Fatalf("stun port: %s", raw)
	}
}

func TestTURNCredentialsFeatureAdvertised(t *testing.T) {
	for _, turn := range []bool{false, true} {
		_, raw := handle(t, newExtService(turn, nil), iqFrom("a@example.org/b", `<query xmlns='http://jabber.org/protocol/disco#info'/>`))
		if got := strings.Contains(raw, NSTurnCreds); got != turn {
			t.Errorf("TURN configured=%v: #turncredentials advertised=%v: %s", turn, got, raw)
		}
	}
}
