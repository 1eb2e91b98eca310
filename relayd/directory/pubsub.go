package directory

import (
	"encoding/xml"
	"fmt"
	"strconv"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
)

// XEP-0060 namespaces.
const (
	NSPubsub      = "http://jabber.org/protocol/pubsub"
	NSPubsubEvent = "http://jabber.org/protocol/pubsub#event"
	nsData        = "jabber:x:data"
)

// Node is one directory: a node on a publish-subscribe service.
type Node struct {
	Service jid.JID
	Node    string
	// Session names the XMPP service whose session reaches the node (a
	// mirror on a server the relay has a session with); "" = the default
	// one.
	Session string
}

func (n Node) String() string { return n.Service.String() + "/" + n.Node }

// MaxItems is the most items a reader asks for and keeps per fetch.
const MaxItems = 1000

func pubsub(kids ...xml.TokenReader) xml.TokenReader {
	return xmlstream.Wrap(xmlstream.MultiReader(kids...), xml.StartElement{Name: xml.Name{Space: NSPubsub, Local: "pubsub"}})
}

func el(local string, inner xml.TokenReader, attrs ...xml.Attr) xml.TokenReader {
	return xmlstream.Wrap(inner, xml.StartElement{Name: xml.Name{Local: local}, Attr: attrs})
}

// publishPayload publishes it as the item whose id is its JID.
func publishPayload(node string, it Item) xml.TokenReader {
	return pubsub(el("publish", el("item", it.TokenReader(), attr("id", it.JID.String())), attr("node", node)))
}

// retractPayload retracts the item id, notifying subscribers.
func retractPayload(node, id string) xml.TokenReader {
	return pubsub(el("retract", el("item", nil, attr("id", id)), attr("node", node), attr("notify", "true")))
}

// itemsPayload asks for a node's items, at most MaxItems.
func itemsPayload(node string) xml.TokenReader {
	return pubsub(el("items", nil, attr("node", node), attr("max_items", strconv.Itoa(MaxItems))))
}

// subscribePayload subscribes who to the node's notifications.
func subscribePayload(node string, who jid.JID) xml.TokenReader {
	return pubsub(el("subscribe", nil, attr("node", node), attr("jid", who.String())))
}

// unsubscribePayload ends who's subscription.
func unsubscribePayload(node string, who jid.JID) xml.TokenReader {
	return pubsub(el("unsubscribe", nil, attr("node", node), attr("jid", who.String())))
}

func field(v, value string) xml.TokenReader {
	return el("field", el("value", xmlstream.Token(xml.CharData(value))), attr("var", v))
}

// createPayload creates a directory node: anyone may publish (readers
// check who published what), anyone may read, items persist, at most
// as many as the service allows ("max"), each stamped with its
// publisher.
func createPayload(node string) xml.TokenReader {
	form := xmlstream.Wrap(xmlstream.MultiReader(
		xmlstream.Wrap(el("value", xmlstream.Token(xml.CharData(NSPubsub+"#node_config"))),
			xml.StartElement{Name: xml.Name{Local: "field"}, Attr: []xml.Attr{attr("var", "FORM_TYPE"), attr("type", "hidden")}}),
		field("pubsub#publish_model", "open"),
		field("pubsub#access_model", "open"),
		field("pubsub#persist_items", "1"),
		field("pubsub#max_items", "max"),
		field("pubsub#itemreply", "publisher"),
		field("pubsub#notify_retract", "1"),
	), xml.StartElement{Name: xml.Name{Space: nsData, Local: "x"}, Attr: []xml.Attr{attr("type", "submit")}})
	return pubsub(el("create", nil, attr("node", node)), el("configure", form))
}

// Entry is one item read from a node: its id and publisher as the
// service gave them, and the item parsed (Err says why not).
type Entry struct {
	ID        string
	Publisher string // "" when the service does not say
	Item      Item
	Err       error
	// Retracted is set for a retraction notification (ID alone).
	Retracted bool
}

// Items is a node's items, decoded from an items result or an event
// notification (<pubsub><items/></pubsub> or <event><items/></event>).
// At most MaxItems are kept; the rest is skipped.
type Items struct {
	Node    string
	Entries []Entry
	now     func() time.Time
}

// UnmarshalXML reads a <pubsub/> or <event/> element holding <items/>.
func (is *Items) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	if start.Name.Space != NSPubsub && start.Name.Space != NSPubsubEvent {
		return fmt.Errorf("got <%s xmlns=%q>, want pubsub items", start.Name.Local, start.Name.Space)
	}
	now := time.Now
	if is.now != nil {
		now = is.now
	}
	for {
		tok, err := d.Token()
		if err != nil {
			return fmt.Errorf("pubsub items: %w", err)
		}
		switch t := tok.(type) {
		case xml.EndElement:
			return nil
		case xml.StartElement:
			if t.Name.Local != "items" {
				if err := d.Skip(); err != nil {
					return err
				}
				continue
			}
			is.Node = attrOf(t, "node")
			if err := is.readItems(d, now()); err != nil {
				return err
			}
		}
	}
}

// readItems reads the children of <items/> up to its end.
func (is *Items) readItems(d *xml.Decoder, now time.Time) error {
	for {
		tok, err := d.Token()
		if err != nil {
			return fmt.Errorf("pubsub items: %w", err)
		}
		switch t := tok.(type) {
		case xml.EndElement:
			return nil
		case xml.StartElement:
			if len(is.Entries) >= MaxItems || (t.Name.Local != "item" && t.Name.Local != "retract") {
				if err := d.Skip(); err != nil {
					return err
				}
				continue
			}
			e := Entry{ID: attrOf(t, "id"), Publisher: attrOf(t, "publisher"), Retracted: t.Name.Local == "retract"}
			if !e.Retracted {
				e.Item, e.Err = readItem(d, now)
			} else if err := d.Skip(); err != nil {
				return err
			}
			is.Entries = append(is.Entries, e)
		}
	}
}

// readItem reads an <item/>'s payload up to the item's end; a bad
// payload is an Entry error, a broken stream an error of the read.
func readItem(d *xml.Decoder, now time.Time) (Item, error) {
	var it Item
	var perr error
	found := false
	for {
		tok, err := d.Token()
		if err != nil {
			return it, fmt.Errorf("%w: item: %v", ErrInvalid, err)
		}
		switch t := tok.(type) {
		case xml.EndElement:
			if !found && perr == nil {
				perr = invalid("item without payload")
			}
			return it, perr
		case xml.StartElement:
			if found {
				if err := d.Skip(); err != nil {
					return it, err
				}
				continue
			}
			found = true
			var open int
			it, open, perr = parse(d, t, now)
			// parse stopped inside the payload: skip its rest.
			for ; open > 0; open-- {
				if err := d.Skip(); err != nil {
					return it, err
				}
			}
		}
	}
}

func attrOf(start xml.StartElement, name string) string {
	for _, a := range start.Attr {
		if a.Name.Space == "" && a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}
