package jinglenodes

import (
	"cmp"
	"encoding/xml"
	"fmt"
	"strconv"

	"mellium.im/xmlstream"
)

// ListingKind is what a <services/> entry lists: its element name.
type ListingKind string

const (
	ListingRelay   ListingKind = "relay"
	ListingTracker ListingKind = "tracker"
	ListingSTUN    ListingKind = "stun"
)

// Who a listed service serves: its policy attribute.
const (
	ListingPublic = "public" // anyone
	ListingRoster = "roster" // the owner's contacts only
)

// Listing is one entry of a <services/> document.
type Listing struct {
	Kind     ListingKind
	Policy   string // ListingPublic or ListingRoster; "" is public
	Address  string // a JID, or an IP address for stun
	Port     int    // stun only
	Protocol string // udp; "" is udp
}

// Services is a XEP-0278 <services/> document: what a relay or tracker
// lists. The relay answers with one and the tracker reads others'.
type Services struct {
	Listings []Listing
}

var servicesName = xml.Name{Space: NS, Local: "services"}

// TokenReader encodes s, writing the defaults of empty policies and
// protocols out.
func (s Services) TokenReader() xml.TokenReader {
	entries := make([]xml.TokenReader, 0, len(s.Listings))
	for _, l := range s.Listings {
		attrs := []xml.Attr{
			{Name: xml.Name{Local: "policy"}, Value: cmp.Or(l.Policy, ListingPublic)},
			{Name: xml.Name{Local: "address"}, Value: l.Address},
		}
		if l.Port > 0 {
			attrs = append(attrs, xml.Attr{Name: xml.Name{Local: "port"}, Value: strconv.Itoa(l.Port)})
		}
		attrs = append(attrs, xml.Attr{Name: xml.Name{Local: "protocol"}, Value: cmp.Or(l.Protocol, "udp")})
		entries = append(entries, xmlstream.Wrap(nil, xml.StartElement{Name: xml.Name{Local: string(l.Kind)}, Attr: attrs}))
	}
	return xmlstream.Wrap(xmlstream.MultiReader(entries...), xml.StartElement{Name: servicesName})
}

// UnmarshalXML decodes a <services/> element: every child element is a
// listing of its kind, attributes as written (empty when missing; a port
// that is not a number is 0).
func (s *Services) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	if start.Name != servicesName {
		return fmt.Errorf("got <%s xmlns=%q>, want <services xmlns=%q>", start.Name.Local, start.Name.Space, NS)
	}
	s.Listings = nil
	for {
		tok, err := d.Token()
		if err != nil {
			return fmt.Errorf("services: %w", err)
		}
		switch el := tok.(type) {
		case xml.EndElement:
			return nil
		case xml.StartElement:
			port, _ := strconv.Atoi(attrValue(el.Attr, "port"))
			s.Listings = append(s.Listings, Listing{Kind: ListingKind(el.Name.Local), Policy: attrValue(el.Attr, "policy"),
				Address: attrValue(el.Attr, "address"), Port: port, Protocol: attrValue(el.Attr, "protocol")})
			if err := d.Skip(); err != nil {
				return fmt.Errorf("services: %w", err)
			}
		}
	}
}

// services is this relay's answer: itself while it takes channels, then
// the configured listings (trackers, learned relays, STUN).
func (h *Handler) services() xml.TokenReader {
	var doc Services
	if h.svc.gate.RelayWide() == nil {
		policy := ListingPublic
		if h.policy.RosterOnly {
			policy = ListingRoster
		}
		doc.Listings = append(doc.Listings, Listing{Kind: ListingRelay, Policy: policy, Address: h.sess.Addr().String(), Protocol: "udp"})
	}
	if h.svc.cfg.Listings != nil {
		doc.Listings = append(doc.Listings, h.svc.cfg.Listings()...)
	}
	if port := h.svc.external().STUNPort; port > 0 && h.svc.cfg.PublicHost().IsValid() {
		doc.Listings = append(doc.Listings, stunListing(h.svc.cfg.PublicHost(), port))
	}
	return doc.TokenReader()
}
