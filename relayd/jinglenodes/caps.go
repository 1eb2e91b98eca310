package jinglenodes

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"slices"
	"strings"

	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/roster"
	"mellium.im/xmpp/stanza"

	"github.com/jnrelay/jnrelay/relayd/admission"
)

// CapsNode identifies jnrelay in XEP-0115 entity capabilities.
const CapsNode = "https://github.com/jnrelay/jnrelay"

// CapsExt is the legacy caps extension Jingle Nodes clients look for in a
// contact's presence to know it offers relay channels.
const CapsExt = "jn-v0"

// features are the disco#info features of the relay. NS covers
// <services/>, i.e. the relay acts as a tracker; NSTurnCreds is added when a
// TURN server is configured.
func (s *Service) features() []string {
	f := []string{NSDiscoInfo, NSDiscoItem, NSPing, NS, NSChannel, NSExtDisco}
	if s.external().TURN != nil {
		f = append(f, NSTurnCreds)
	}
	return f
}

// capsVer is the XEP-0115 verification string of the relay's disco#info
// (identity proxy/relay, the features above), §5.1.
func (s *Service) capsVer() string {
	var b strings.Builder
	fmt.Fprintf(&b, "proxy/relay//%s<", s.cfg.Name)
	sorted := s.features()
	slices.Sort(sorted)
	for _, f := range sorted {
		b.WriteString(f + "<")
	}
	return capsHash(b.String())
}

// capsHash is base64(sha-1(s)), the "sha-1" hash of XEP-0115.
func capsHash(s string) string {
	sum := sha1.Sum([]byte(s))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// discoInfo answers disco#info for node: the relay itself (no node), the
// caps node of the current version, or the jn-v0 extension node.
func (s *Service) discoInfo(node string) (xml.TokenReader, bool) {
	switch node {
	case "", CapsNode + "#" + s.capsVer(), CapsNode + "#" + CapsExt:
	default:
		return nil, false
	}
	inner := []xml.TokenReader{xmlstream.Wrap(nil, xml.StartElement{
		Name: xml.Name{Local: "identity"},
		Attr: []xml.Attr{
			{Name: xml.Name{Local: "category"}, Value: "proxy"},
			{Name: xml.Name{Local: "type"}, Value: "relay"},
			{Name: xml.Name{Local: "name"}, Value: s.cfg.Name},
		},
	})}
	for _, f := range s.features() {
		inner = append(inner, xmlstream.Wrap(nil, xml.StartElement{
			Name: xml.Name{Local: "feature"},
			Attr: []xml.Attr{{Name: xml.Name{Local: "var"}, Value: f}},
		}))
	}
	query := xml.StartElement{Name: xml.Name{Space: NSDiscoInfo, Local: "query"}}
	if node != "" {
		query.Attr = []xml.Attr{{Name: xml.Name{Local: "node"}, Value: node}}
	}
	return xmlstream.Wrap(xmlstream.MultiReader(inner...), query), true
}

// presence is the initial presence of a client account: available, with
// caps (and the jn-v0 extension) so contacts' clients can tell it is a
// relay without asking.
func (s *Service) presence() xml.TokenReader {
	c := xmlstream.Wrap(nil, xml.StartElement{
		Name: xml.Name{Space: NSCaps, Local: "c"},
		Attr: []xml.Attr{
			{Name: xml.Name{Local: "hash"}, Value: "sha-1"},
			{Name: xml.Name{Local: "node"}, Value: CapsNode},
			{Name: xml.Name{Local: "ver"}, Value: s.capsVer()},
			{Name: xml.Name{Local: "ext"}, Value: CapsExt},
		},
	})
	return stanza.Presence{}.Wrap(c)
}

// OnOnline is run by a client session after each login: it fetches the
// roster when the policy needs it, then sends initial presence with caps
// (in that order, as RFC 6121 §2.2 recommends).
func (h *Handler) OnOnline(ctx context.Context, sess *xmpp.Session) error {
	if h.policy.RosterOnly && h.policy.Roster != nil {
		iter := roster.Fetch(ctx, sess)
		var items []admission.RosterItem
		for iter.Next() {
			it := iter.Item()
			items = append(items, admission.RosterItem{JID: it.JID, Subscription: it.Subscription})
		}
		err := iter.Err()
		iter.Close()
		if err != nil {
			return fmt.Errorf("fetch roster: %w", err)
		}
		h.policy.Roster.Replace(items)
		h.log.Info("roster fetched", "contacts", len(items))
	}
	if err := sess.Send(ctx, h.svc.presence()); err != nil {
		return fmt.Errorf("send initial presence: %w", err)
	}
	return nil
}

// rosterPush applies a roster push from the account's own server and
// acknowledges it; pushes from anyone else are refused (RFC 6121 §2.1.6).
func (h *Handler) rosterPush(req Request) xml.TokenReader {
	from := req.IQ.From
	own := h.sess.Addr().Bare()
	if !from.Equal(jid.JID{}) && !from.Equal(own) {
		return h.errorReply(req.IQ, stanza.Cancel, stanza.ServiceUnavailable, "")
	}
	if h.policy.Roster != nil {
		h.policy.Roster.Update(req.RosterItems)
		h.log.Info("roster updated", "items", len(req.RosterItems))
	}
	return h.result(req.IQ, nil)
}
