package jinglenodes

import (
	"bytes"
	"encoding/xml"
	"net/netip"
	"strings"
	"testing"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"

	"github.com/jnrelay/jnrelay/relayd/admission"
)

const channelReq = `<channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/>`

func iqFrom(from, payload string) string {
	return `<iq type='get' id='q' from='` + from + `' to='relay@example.org/jn'>` + payload + `</iq>`
}

func TestPolicy(t *testing.T) {
	must := func(l []string) []jid.JID {
		j, err := ParseJIDList(l)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	roster := admission.NewRoster()
	roster.Replace([]admission.RosterItem{
		{JID: jid.MustParse("friend@example.org"), Subscription: "both"},
		{JID: jid.MustParse("fan@example.org"), Subscription: "from"},
		{JID: jid.MustParse("idol@example.org"), Subscription: "to"},
		{JID: jid.MustParse("stranger@example.org"), Subscription: "none"},
	})
	cases := []struct {
		name    string
		policy  admission.Policy
		from    string
		granted bool
	}{
		{"public", admission.Policy{}, "anyone@example.net/x", true},
		{"deny by JID", admission.Policy{Deny: must([]string{"troll@example.net"})}, "troll@example.net/x", false},
		{"deny by domain", admission.Policy{Deny: must([]string{"example.net"})}, "anyone@example.net/x", false},
		{"deny wins over allow", admission.Policy{Allow: must([]string{"example.net"}), Deny: must([]string{"troll@example.net"})}, "troll@example.net/x", false},
		{"allow by domain", admission.Policy{Allow: must([]string{"example.net"})}, "anyone@example.net/x", true},
		{"not allowed", admission.Policy{Allow: must([]string{"example.net"})}, "anyone@example.com/x", false},
		{"roster both", admission.Policy{RosterOnly: true, Roster: roster}, "friend@example.org/phone", true},
		{"roster from", admission.Policy{RosterOnly: true, Roster: roster}, "fan@example.org/phone", true},
		{"roster to only", admission.Policy{RosterOnly: true, Roster: roster}, "idol@example.org/phone", false},
		{"roster none", admission.Policy{RosterOnly: true, Roster: roster}, "stranger@example.org/phone", false},
		{"not in roster", admission.Policy{RosterOnly: true, Roster: roster}, "other@example.org/phone", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			alloc := &fakeAllocator{left: 1}
			svc := New(Config{Allocator: alloc, PublicHost: func() netip.Addr { return netip.MustParseAddr("203.0.113.7") }})
			policy := c.policy
			h := svc.Handler(&recordingSender{addr: jid.MustParse("relay@example.org/jn")}, &policy)
			r, raw := handle(t, h, iqFrom(c.from, channelReq))
			if c.granted {
				if r.Type != "result" || alloc.calls != 1 {
					t.Fatalf("want a channel: %s", raw)
				}
				return
			}
			if r.Type != "error" || r.Error.Type != "auth" || r.Error.condition() != "forbidden" || alloc.calls != 0 {
				t.Fatalf("want auth/forbidden and no allocation: %s (allocations %d)", raw, alloc.calls)
			}
		})
	}
}

func TestRosterPushes(t *testing.T) {
	roster := admission.NewRoster()
	svc := New(Config{Allocator: &fakeAllocator{left: 3}, PublicHost: func() netip.Addr { return netip.MustParseAddr("203.0.113.7") }})
	h := svc.Handler(&recordingSender{addr: jid.MustParse("relay@example.org/jn")}, &admission.Policy{RosterOnly: true, Roster: roster})
	push := func(from, item string) reply {
		r, _ := handle(t, h, `<iq type='set' id='push' `+from+` to='relay@example.org/jn'><query xmlns='jabber:iq:roster'>`+item+`</query></iq>`)
		return r
	}
	if r, raw := handle(t, h, iqFrom("friend@example.org/phone", channelReq)); r.Type != "error" {
		t.Fatalf("before the push: %s", raw)
	}
	// From the server (no from) and from the own bare JID: both accepted.
	if r := push("", `<item jid='friend@example.org' subscription='both'/>`); r.Type != "result" {
		t.Fatalf("push answered %+v", r)
	}
	if r := push(`from='relay@example.org'`, `<item jid='fan@example.org' subscription='from'/>`); r.Type != "result" {
		t.Fatalf("push answered %+v", r)
	}
	if r, raw := handle(t, h, iqFrom("friend@example.org/phone", channelReq)); r.Type != "result" {
		t.Fatalf("after the push: %s", raw)
	}
	// A forged push from someone else changes nothing.
	if r := push(`from='mallory@example.net/x'`, `<item jid='mallory@example.net' subscription='both'/>`); r.Type != "error" {
		t.Fatalf("forged push answered %+v", r)
	}
	if roster.Subscribed(jid.MustParse("mallory@example.net")) {
		t.Fatal("forged push applied")
	}
	// Removal.
	push("", `<item jid='friend@example.org' subscription='remove'/>`)
	if r, raw := handle(t, h, iqFrom("friend@example.org/phone", channelReq)); r.Type != "error" {
		t.Fatalf("after removal: %s", raw)
	}
	if roster.Len() != 1 {
		t.Fatalf("roster has %d contacts, want 1", roster.Len())
	}
	// Services says roster policy.
	r, raw := handle(t, h, iqFrom("x@example.org/y", `<services xmlns='http://jabber.org/protocol/jinglenodes'/>`))
	if p, _ := r.Inner[0].Inner[0].attr("policy"); p != "roster" {
		t.Fatalf("services: %s", raw)
	}
	if a, _ := r.Inner[0].Inner[0].attr("address"); a != "relay@example.org/jn" {
		t.Fatalf("services address: %s", raw)
	}
}

func TestCapsNodesAndPresence(t *testing.T) {
	svc, h, _ := newTestService(&fakeAllocator{})
	ver := svc.capsVer()
	for _, node := range []string{CapsNode + "#" + ver, CapsNode + "#" + CapsExt} {
		r, raw := handle(t, h, iqFrom("a@example.org/b", `<query xmlns='http://jabber.org/protocol/disco#info' node='`+node+`'/>`))
		if r.Type != "result" {
			t.Fatalf("node %s: %s", node, raw)
		}
		if got, _ := r.Inner[0].attr("node"); got != node {
			t.Fatalf("node not echoed: %s", raw)
		}
		if !strings.Contains(raw, NSChannel) {
			t.Fatalf("node %s lacks the channel feature: %s", node, raw)
		}
	}
	if r, _ := handle(t, h, iqFrom("a@example.org/b", `<query xmlns='http://jabber.org/protocol/disco#info' node='`+CapsNode+`#stale'/>`)); r.Type != "error" {
		t.Fatal("unknown caps node answered")
	}
	var buf bytes.Buffer
	enc := xml.NewEncoder(&buf)
	if _, err := xmlstream.Copy(enc, svc.presence()); err != nil {
		t.Fatal(err)
	}
	enc.Flush()
	p := buf.String()
	for _, want := range []string{`hash="sha-1"`, `node="` + CapsNode + `"`, `ver="` + ver + `"`, `ext="jn-v0"`} {
		if !strings.Contains(p, want) {
			t.Errorf("presence %s lacks %s", p, want)
		}
	}
}

// TestCapsVerKnownAnswer checks the XEP-0115 §5.2 algorithm against the
// specification's own example (identity client/pc//Exodus 0.9.1).
func TestCapsVerKnownAnswer(t *testing.T) {
	s := "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"
	if got := capsHash(s); got != "QgayPKawpkPSDYmwT/WM94uAlu0=" {
		t.Fatalf("hash of the XEP example: %s", got)
	}
}
