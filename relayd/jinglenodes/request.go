// Package jinglenodes answers the IQs a Jingle Nodes relay receives
// (XEP-0278 channel and services requests, service discovery, ping) and
// sends the channel events it owes requesters.
//
// It is the control plane's protocol layer: it asks the admission gate
// (relayd/admission) whether a requester may have a channel, the data
// plane for the channel through the Allocator interface, and maps the
// refusals of both to XMPP errors in one table (refusal.go). It never
// touches sockets.
package jinglenodes

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/jnrelay/jnrelay/relayd/admission"
)

// XML namespaces of XEP-0278 and of the other protocols answered here.
const (
	NS          = "http://jabber.org/protocol/jinglenodes"
	NSChannel   = NS + "#channel"
	NSEvent     = NS + "#event"
	NSDiscoInfo = "http://jabber.org/protocol/disco#info"
	NSDiscoItem = "http://jabber.org/protocol/disco#items"
	NSPing      = "urn:xmpp:ping"
	NSRoster    = "jabber:iq:roster"
	NSCaps      = "http://jabber.org/protocol/caps"
	NSExtDisco  = "urn:xmpp:extdisco:2"
	NSTurnCreds = NS + "#turncredentials"
)

// Kind is what an IQ asks for.
type Kind int

const (
	KindUnknown         Kind = iota // a payload we do not serve
	KindChannel                     // <channel/> (or legacy <candidate/>) in #channel
	KindServices                    // <services/> in jinglenodes
	KindDiscoInfo                   // disco#info query
	KindDiscoItems                  // disco#items query
	KindPing                        // XEP-0199 ping
	KindResponse                    // a result or error IQ: needs no answer
	KindRosterPush                  // roster push (RFC 6121 §2.1.6): an IQ set of jabber:iq:roster
	KindExtServices                 // XEP-0215 <services/>
	KindExtCredentials              // XEP-0215 <credentials/>
	KindTurnCredentials             // jinglenodes#turncredentials <turn/>
)

// Request is a parsed incoming IQ.
type Request struct {
	IQ      stanza.IQ
	Kind    Kind
	Payload xml.Name // the payload element's name (for logs)
	// Protocol is the requested channel transport, lowercased; "udp" when the
	// attribute is missing.
	Protocol string
	// Legacy is set for the 2009-era <candidate/> form of the request; the
	// answer then uses the same element name.
	Legacy bool
	// Node is the disco node queried, if any.
	Node string
	// RosterItems are the items of a roster push.
	RosterItems []admission.RosterItem
	// Attrs are the payload element's attributes; ChildAttrs those of its
	// first child element (XEP-0215 credentials name their service there).
	Attrs, ChildAttrs []xml.Attr
}

// Malformed is returned by ParseRequest for IQs that must be answered with
// bad-request; IQ holds what could be read of the stanza so the answer can
// be addressed.
type Malformed struct {
	IQ     stanza.IQ
	Reason string
}

func (m *Malformed) Error() string { return "malformed request: " + m.Reason }

// ParseRequest reads the IQ whose start element is start from r (the tokens
// after start, up to and optionally including the IQ's end element) and
// classifies it. Unknown payloads are not an error (they get
// service-unavailable); structurally broken requests return *Malformed.
func ParseRequest(start xml.StartElement, r xml.TokenReader) (Request, error) {
	if name, ok := duplicateAttr(start.Attr); ok {
		// Not well-formed XML (a server never forwards it): with two ids
		// or two senders there is no one to address an answer to.
		return Request{}, &Malformed{Reason: fmt.Sprintf("attribute %q given twice", name)}
	}
	iq, err := stanza.NewIQ(start)
	if err != nil {
		// A JID or attribute that does not parse: keep what we can for the
		// answer's addressing.
		iq = stanza.IQ{ID: attrValue(start.Attr, "id"), Type: stanza.IQType(attrValue(start.Attr, "type"))}
		return Request{IQ: iq}, &Malformed{IQ: iq, Reason: err.Error()}
	}
	req := Request{IQ: iq}
	switch iq.Type {
	case stanza.ResultIQ, stanza.ErrorIQ:
		req.Kind = KindResponse
		return req, nil
	case stanza.GetIQ, stanza.SetIQ:
	default:
		return req, &Malformed{IQ: iq, Reason: fmt.Sprintf("IQ type %q", iq.Type)}
	}
	if iq.ID == "" {
		return req, &Malformed{IQ: iq, Reason: "IQ without id"}
	}

	// Read raw tokens with our own depth count: the stream's decoder has
	// already checked well-formedness, and a nested decoder would reject
	// the IQ's own end element as unbalanced. Every request we serve is a
	// few small elements; anything far bigger (nesting, element, attribute
	// or text bombs a server let through) is refused before it costs more
	// work.
	var payload *xml.StartElement
	depth, elements, text := 0, 0, 0
	for {
		tok, err := r.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return req, &Malformed{IQ: iq, Reason: err.Error()}
		}
		if tok == nil {
			continue
		}
		switch el := tok.(type) {
		case xml.CharData:
			if text += len(el); text > maxPayloadText {
				return req, &Malformed{IQ: iq, Reason: fmt.Sprintf("payload text over %d bytes", maxPayloadText)}
			}
		case xml.StartElement:
			depth++
			elements++
			switch {
			case depth > maxPayloadDepth:
				return req, &Malformed{IQ: iq, Reason: fmt.Sprintf("payload nested deeper than %d", maxPayloadDepth)}
			case elements > maxPayloadElements:
				return req, &Malformed{IQ: iq, Reason: fmt.Sprintf("payload of more than %d elements", maxPayloadElements)}
			case len(el.Attr) > maxAttrs:
				return req, &Malformed{IQ: iq, Reason: fmt.Sprintf("element with more than %d attributes", maxAttrs)}
			}
			if depth == 2 && payload != nil && payload.Name == rosterQuery && el.Name.Local == "item" {
				req.RosterItems = appendRosterItem(req.RosterItems, el)
			}
			if depth == 2 && req.ChildAttrs == nil {
				req.ChildAttrs = el.Copy().Attr
			}
			if depth > 1 {
				continue // other children: no request we serve needs them
			}
			if payload != nil {
				return req, &Malformed{IQ: iq, Reason: "IQ with more than one payload element"}
			}
			el = el.Copy()
			payload = &el
			// Set now: a request refused further on as malformed is
			// still answered with its payload echoed (channelEcho).
			req.Payload, req.Attrs = el.Name, el.Attr
		case xml.EndElement:
			depth--
		}
		if depth < 0 {
			break // the IQ's own end element
		}
	}
	if payload == nil {
		return req, &Malformed{IQ: iq, Reason: "IQ without payload"}
	}
	classify(&req, *payload)
	if req.Kind == KindChannel {
		if err := parseProtocol(&req, *payload); err != nil {
			return req, err
		}
	}
	return req, nil
}

// classify sets Kind (and Legacy, Node) from the payload element.
func classify(req *Request, el xml.StartElement) {
	get := req.IQ.Type == stanza.GetIQ
	switch {
	case isChannelRequest(el.Name):
		// Jitsi and others send get; accept set too, the request is the same.
		req.Kind = KindChannel
		req.Legacy = el.Name.Local == "candidate"
	case el.Name == xml.Name{Space: NS, Local: "services"} && get:
		req.Kind = KindServices
	case el.Name == xml.Name{Space: NSDiscoInfo, Local: "query"} && get:
		req.Kind = KindDiscoInfo
		req.Node = attrValue(el.Attr, "node")
	case el.Name == xml.Name{Space: NSDiscoItem, Local: "query"} && get:
		req.Kind = KindDiscoItems
		req.Node = attrValue(el.Attr, "node")
	case el.Name == xml.Name{Space: NSPing, Local: "ping"} && get:
		req.Kind = KindPing
	case el.Name == rosterQuery && req.IQ.Type == stanza.SetIQ:
		req.Kind = KindRosterPush
	case el.Name == xml.Name{Space: NSExtDisco, Local: "services"} && get:
		req.Kind = KindExtServices
	case el.Name == xml.Name{Space: NSExtDisco, Local: "credentials"} && get:
		req.Kind = KindExtCredentials
	case el.Name == xml.Name{Space: NSTurnCreds, Local: "turn"} && get:
		req.Kind = KindTurnCredentials
	default:
		req.Kind = KindUnknown
	}
}

func parseProtocol(req *Request, el xml.StartElement) error {
	proto, present := "", false
	for _, a := range el.Attr {
		if a.Name.Local == "protocol" && a.Name.Space == "" {
			proto, present = strings.ToLower(strings.TrimSpace(a.Value)), true
		}
	}
	switch {
	case !present:
		req.Protocol = "udp" // old clients omit it; UDP is the only transport they know
	case proto == "udp" || proto == "tcp":
		req.Protocol = proto
	default:
		return &Malformed{IQ: req.IQ, Reason: fmt.Sprintf("protocol %q is neither udp nor tcp", proto)}
	}
	return nil
}

var rosterQuery = xml.Name{Space: NSRoster, Local: "query"}

// appendRosterItem adds a roster push item; items with unusable JIDs are
// skipped (the push is answered anyway, as RFC 6121 asks).
func appendRosterItem(items []admission.RosterItem, el xml.StartElement) []admission.RosterItem {
	j, err := jid.Parse(attrValue(el.Attr, "jid"))
	if err != nil || len(items) >= maxRosterPushItems {
		return items
	}
	sub := attrValue(el.Attr, "subscription")
	if sub == "" {
		sub = "none"
	}
	return append(items, admission.RosterItem{JID: j.Bare(), Subscription: sub})
}

// maxRosterPushItems bounds what one push can add (a push carries one item).
const maxRosterPushItems = 16

func attrValue(attrs []xml.Attr, local string) string {
	for _, a := range attrs {
		if a.Name.Local == local && a.Name.Space == "" {
			return a.Value
		}
	}
	return ""
}

// duplicateAttr reports an attribute name that occurs twice (XML 1.0's
// "Unique Att Spec"), which encoding/xml does not check.
func duplicateAttr(attrs []xml.Attr) (string, bool) {
	for i, a := range attrs {
		for _, b := range attrs[:i] {
			if a.Name == b.Name {
				if a.Name.Space != "" {
					return a.Name.Space + ":" + a.Name.Local, true
				}
				return a.Name.Local, true
			}
		}
	}
	return "", false
}

// Bounds on what a request may carry (see ParseRequest). A roster push,
// the largest request served, is three levels and a few attributes.
const (
	maxPayloadDepth    = 16
	maxPayloadElements = 256
	maxAttrs           = 64
	maxPayloadText     = 16 << 10
)
