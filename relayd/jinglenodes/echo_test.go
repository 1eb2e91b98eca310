package jinglenodes

import (
	"cmp"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"mellium.im/xmpp/jid"

	"github.com/jnrelay/jnrelay/relayd/admission"
	"github.com/jnrelay/jnrelay/relayd/channel"
)

// answerChildren returns the elements directly inside the answer raw, in
// the order they were sent.
func answerChildren(t *testing.T, raw string) []xml.StartElement {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(raw))
	var out []xml.StartElement
	depth := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("answer %s: %v", raw, err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if depth++; depth == 2 {
				out = append(out, el.Copy())
			}
		case xml.EndElement:
			depth--
		}
	}
}

// attrsOf is el's attributes, less namespace declarations, as name=value.
func attrsOf(el xml.StartElement) map[string]string {
	m := make(map[string]string)
	for _, a := range el.Attr {
		if a.Name.Local == "xmlns" || a.Name.Space == "xmlns" {
			continue
		}
		m[a.Name.Local] = a.Value
	}
	return m
}

// checkEchoed checks that raw is an error answer whose first child is the
// echoed channel request name with exactly the attributes want, and whose
// second and last is the <error/> of type typ and condition cond.
func checkEchoed(t *testing.T, raw string, name string, want map[string]string, typ, cond string) {
	t.Helper()
	var r reply
	if err := xml.Unmarshal([]byte(raw), &r); err != nil {
		t.Fatalf("answer %s: %v", raw, err)
	}
	if r.Type != "error" || r.Error == nil || r.Error.Type != typ || r.Error.condition() != cond {
		t.Fatalf("want an error %s/%s: %s", typ, cond, raw)
	}
	kids := answerChildren(t, raw)
	if len(kids) != 2 || kids[1].Name.Local != "error" {
		t.Fatalf("want the echo, then <error/>: %s", raw)
	}
	if kids[0].Name != (xml.Name{Space: NSChannel, Local: name}) {
		t.Fatalf("first child %v, want <%s xmlns='%s'/>: %s", kids[0].Name, name, NSChannel, raw)
	}
	if _, dup := duplicateAttr(kids[0].Attr); dup {
		t.Fatalf("echo repeats an attribute: %s", raw)
	}
	if got := attrsOf(kids[0]); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("echo attributes %v, want %v: %s", got, want, raw)
	}
}

// checkNotEchoed checks that raw is an error answer of type typ and
// condition cond carrying nothing but the <error/>.
func checkNotEchoed(t *testing.T, raw, typ, cond string) {
	t.Helper()
	var r reply
	if err := xml.Unmarshal([]byte(raw), &r); err != nil {
		t.Fatalf("answer %s: %v", raw, err)
	}
	if r.Type != "error" || r.Error == nil || r.Error.Type != typ || r.Error.condition() != cond {
		t.Fatalf("want an error %s/%s: %s", typ, cond, raw)
	}
	if kids := answerChildren(t, raw); len(kids) != 1 || kids[0].Name.Local != "error" {
		t.Fatalf("want only <error/>: %s", raw)
	}
}

// Every refusal of a channel request echoes the request's <channel/> (or
// <candidate/>) before its <error/>, whose type and condition, and the
// counter it is counted under, are the refusal's own.
func TestChannelRefusalsEchoTheRequest(t *testing.T) {
	public := func() netip.Addr { return netip.MustParseAddr("203.0.113.7") }
	// hold reserves a channel for holder before the request is made.
	hold := func(holder string) func(*Service) {
		return func(svc *Service) {
			if _, err := svc.gate.Reserve(admission.Request{Requester: jid.MustParse(holder)}); err != nil {
				panic(err)
			}
		}
	}
	const alice = `from='alice@example.org/phone' to='relay.example.org'`
	channelUDP := `<channel xmlns='` + NSChannel + `' protocol='udp'/>`
	for _, c := range []struct {
		name      string
		iqType    string // get when empty
		attrs     string // the IQ's addressing
		payload   string
		cfg       Config
		limits    admission.Limits
		before    func(*Service)
		policy    *admission.Policy
		typ, cond string
		counter   string
		echo      string // element name
		echoAttrs map[string]string
	}{
		{name: "no sender", attrs: `to='relay.example.org'`,
			typ: "modify", cond: "bad-request", counter: "bad_request"},
		{name: "from the relay itself", attrs: `from='relay.example.org/x' to='relay.example.org'`,
			typ: "cancel", cond: "forbidden", counter: "forbidden"},
		{name: "policy denied", policy: &admission.Policy{Deny: []jid.JID{jid.MustParse("example.org")}},
			typ: "auth", cond: "forbidden", counter: "forbidden"},
		{name: "tcp", payload: `<channel xmlns='` + NSChannel + `' protocol='tcp'/>`,
			typ: "cancel", cond: "feature-not-implemented", counter: "feature_not_implemented", echoAttrs: map[string]string{"protocol": "tcp"}},
		{name: "public address unknown", cfg: Config{PublicHost: func() netip.Addr { return netip.Addr{} }},
			typ: "wait", cond: "service-unavailable", counter: "service_unavailable"},
		{name: "quota used up", cfg: Config{Admission: admission.New(admission.Config{Quota: func() error { return errors.New("monthly quota used up") }})},
			typ: "wait", cond: "resource-constraint", counter: "resource_constraint"},
		{name: "relay full", limits: admission.Limits{MaxChannels: 1}, before: hold("bob@example.net"),
			typ: "wait", cond: "resource-constraint", counter: "resource_constraint"},
		{name: "requester rate", limits: admission.Limits{RequesterRequestsPerMinute: 1}, before: hold("alice@example.org"),
			typ: "wait", cond: "policy-violation", counter: "policy_violation"},
		{name: "requester channels", limits: admission.Limits{RequesterChannels: 1}, before: hold("alice@example.org/laptop"),
			typ: "wait", cond: "policy-violation", counter: "policy_violation"},
		{name: "domain share", limits: admission.Limits{DomainChannels: 1}, before: hold("bob@example.org"),
			typ: "wait", cond: "policy-violation", counter: "domain_limit"},
		{name: "draining", cfg: Config{Admission: admission.New(admission.Config{Draining: func() bool { return true }})},
			typ: "cancel", cond: "service-unavailable", counter: "service_unavailable"},
		{name: "draining at allocation", cfg: Config{Allocator: &fakeAllocator{err: channel.ErrDraining}},
			typ: "cancel", cond: "service-unavailable", counter: "service_unavailable"},
		{name: "pool exhausted", cfg: Config{Allocator: &fakeAllocator{}},
			typ: "wait", cond: "resource-constraint", counter: "resource_constraint"},
		{name: "out of resources", cfg: Config{Allocator: &fakeAllocator{err: fmt.Errorf("socket: %w", syscall.ENFILE)}},
			typ: "wait", cond: "resource-constraint", counter: "resource_constraint"},
		{name: "internal", cfg: Config{Allocator: &fakeAllocator{err: errors.New("bind: permission denied")}},
			typ: "wait", cond: "internal-server-error", counter: "internal"},
		{name: "legacy candidate", payload: `<candidate xmlns='` + NSChannel + `'/>`, cfg: Config{Allocator: &fakeAllocator{}},
			typ: "wait", cond: "resource-constraint", counter: "resource_constraint", echo: "candidate", echoAttrs: map[string]string{}},
		{name: "legacy candidate over tcp", payload: `<candidate xmlns='` + NSChannel + `' protocol='tcp'/>`,
			typ: "cancel", cond: "feature-not-implemented", counter: "feature_not_implemented", echo: "candidate", echoAttrs: map[string]string{"protocol": "tcp"}},
		{name: "set", iqType: "set", cfg: Config{Allocator: &fakeAllocator{}},
			typ: "wait", cond: "resource-constraint", counter: "resource_constraint"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			if cfg.Allocator == nil {
				cfg.Allocator = &fakeAllocator{left: 1}
			}
			if cfg.PublicHost == nil {
				cfg.PublicHost = public
			}
			svc := New(cfg)
			svc.gate.SetLimits(c.limits)
			if c.before != nil {
				c.before(svc)
			}
			h := svc.Handler(&recordingSender{}, c.policy)
			stanza := `<iq type='` + cmp.Or(c.iqType, "get") + `' id='e' ` + cmp.Or(c.attrs, alice) + `>` + cmp.Or(c.payload, channelUDP) + `</iq>`
			_, raw := handle(t, h, stanza)
			want := c.echoAttrs
			if want == nil {
				want = map[string]string{"protocol": "udp"}
			}
			checkEchoed(t, raw, cmp.Or(c.echo, "channel"), want, c.typ, c.cond)
			refused := svc.Stats().Refused
			total := 0
			for _, n := range refused {
				total += int(n)
			}
			if refused[c.counter] != 1 || total != 1 {
				t.Fatalf("refusals %v, want one %s", refused, c.counter)
			}
		})
	}
}

// A malformed request echoes the channel request's payload when its
// element was read before the request broke (a protocol neither udp nor
// tcp, children past the caps, a second payload after it); when it broke
// before (IQ attributes, no payload, a payload element past the caps, a
// first payload of another kind) nothing is echoed.
func TestMalformedChannelRequestEchoes(t *testing.T) {
	const open = `<iq type='get' id='e' ` + client + `>`
	ch := func(attrs, inner string) string {
		return `<channel xmlns='` + NSChannel + `'` + attrs + `>` + inner + `</channel>`
	}
	for _, c := range []struct {
		name, stanza string
		echo         string // "" = none
		attrs        map[string]string
	}{
		{"protocol neither udp nor tcp", open + ch(` protocol='carrier-pigeon'`, "") + `</iq>`, "channel", map[string]string{"protocol": "carrier-pigeon"}},
		{"empty protocol", open + ch(` protocol=''`, "") + `</iq>`, "channel", map[string]string{"protocol": ""}},
		{"legacy with a bad protocol", open + `<candidate xmlns='` + NSChannel + `' protocol='sctp'/></iq>`, "candidate", map[string]string{"protocol": "sctp"}},
		{"nested children", open + ch(` protocol='udp'`, strings.Repeat("<a>", 40)+strings.Repeat("</a>", 40)) + `</iq>`, "channel", map[string]string{"protocol": "udp"}},
		{"a child with too many attributes", open + ch(``, `<b`+attrBomb(100)+`/>`) + `</iq>`, "channel", map[string]string{}},
		{"text bomb", open + ch(` protocol='udp'`, `<c>`+strings.Repeat("x", 20000)+`</c>`) + `</iq>`, "channel", map[string]string{"protocol": "udp"}},
		{"two payloads", open + ch(` protocol='udp'`, "") + ch(` protocol='tcp'`, "") + `</iq>`, "channel", map[string]string{"protocol": "udp"}},
		{"a channel after another payload", open + `<ping xmlns='urn:xmpp:ping'/>` + ch(``, "") + `</iq>`, "", nil},
		{"channel with too many attributes", open + `<channel xmlns='` + NSChannel + `'` + attrBomb(100) + `/></iq>`, "", nil},
		{"no payload", open + `</iq>`, "", nil},
		{"unparsable sender", `<iq type='get' id='e' from='@@@' to='relay.example.org'>` + ch(``, "") + `</iq>`, "", nil},
		{"unknown IQ type", `<iq type='fetch' id='e' ` + client + `>` + ch(``, "") + `</iq>`, "", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			svc, h, _ := newTestService(&fakeAllocator{left: 1})
			_, raw := handle(t, h, c.stanza)
			if c.echo == "" {
				checkNotEchoed(t, raw, "modify", "bad-request")
			} else {
				checkEchoed(t, raw, c.echo, c.attrs, "modify", "bad-request")
			}
			if got := svc.Stats().Refused["bad_request"]; got != 1 {
				t.Fatalf("bad_request refusals %d, want 1", got)
			}
		})
	}
}

// The echo carries the request's own unqualified attributes, each once,
// but never a grant's host, ports or id (a client that reads only those
// must see no relay), nor namespace declarations or qualified attributes.
func TestEchoKeepsOnlyTheRequestsOwnAttributes(t *testing.T) {
	_, h, _ := newTestService(&fakeAllocator{}) // pool exhausted
	_, raw := handle(t, h, `<iq type='get' id='e' `+client+`><channel xmlns='`+NSChannel+`' xmlns:p='urn:example:p' p:x='1' xml:lang='en'`+
		` protocol='tcp' note='hi' protocol='udp' host='198.51.100.1' localport='40000' remoteport='40002' id='forged' expire='60' maxkbps='5'/></iq>`)
	checkEchoed(t, raw, "channel", map[string]string{"protocol": "udp", "note": "hi"}, "wait", "resource-constraint")
	for _, leak := range []string{"198.51.100.1", "40002", "forged", "urn:example:p"} {
		if strings.Contains(raw, leak) {
			t.Errorf("the answer carries %q: %s", leak, raw)
		}
	}
}

// Errors answering other requests carry no echo, as before.
func TestOtherErrorsAreNotEchoed(t *testing.T) {
	_, h, _ := newTestService(&fakeAllocator{left: 1})
	for _, c := range []struct{ stanza, typ, cond string }{
		{`<iq type='get' id='e' ` + client + `><query xmlns='jabber:iq:version'/></iq>`, "cancel", "service-unavailable"},
		{`<iq type='set' id='e' ` + client + `><services xmlns='http://jabber.org/protocol/jinglenodes'/></iq>`, "cancel", "service-unavailable"},
		{`<iq type='get' id='e' ` + client + `><query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>`, "cancel", "item-not-found"},
		{`<iq type='get' id='e' ` + client + `><channel xmlns='http://jabber.org/protocol/jinglenodes'/></iq>`, "cancel", "service-unavailable"},
	} {
		_, raw := handle(t, h, c.stanza)
		checkNotEchoed(t, raw, c.typ, c.cond)
	}
}
