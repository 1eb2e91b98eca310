// Package directory publishes relays to, and reads them from, relay
// directories: XMPP publish-subscribe (XEP-0060) nodes on providers' own
// servers. A relay publishes one item about itself (item id = its JID);
// trackers and relays fetch a node's items, subscribe to its
// notifications and list the relays they trust in <services/>. The item
// format and the trust rule are in docs/directory.md.
package directory

import (
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
)

// NS is the namespace of a directory item's payload.
const NS = "urn:xmpp:jnrelay:directory:0"

// Bounds of one item: a reader refuses an item past any of them.
const (
	MaxAttrLen     = 256  // any attribute value but jid
	MaxJIDLen      = 1023 // the jid attribute (a JID's parts are 1023 bytes each at most)
	MaxRegionLen   = 64   // the free-text region, in bytes
	MaxTURN        = 8    // <turn/> elements
	maxTokens      = 256  // tokens read inside the payload, unknown elements included
	maxDepth       = 8    // nesting inside the payload
	maxCapacity    = 1 << 24
	maxVersionLen  = 64
	maxCountryLen  = 2
	maxFutureSkew  = 10 * time.Minute
	itemTimeFormat = time.RFC3339
)

// Status values: a relay that stops cleanly but may not retract its item
// (the server's publish model lets it publish, not retract) publishes
// one last item with StatusStopped; readers drop it.
const (
	StatusOK      = "ok"
	StatusStopped = "stopped"
)

// TURN transports an item may list.
var turnTransports = map[string]bool{"udp": true, "tcp": true, "tls": true}

// Item is what a relay says about itself in a directory.
type Item struct {
	JID    jid.JID
	Policy string // "public": roster-policy relays are never published
	// JingleNodes is set when the relay grants Jingle Nodes UDP channels.
	JingleNodes bool
	// TURN lists the transports of the TURN server the relay announces
	// (udp, tcp, tls).
	TURN []string
	// Free and Total are channels free now and in all.
	Free, Total int
	// Country is an ISO 3166-1 alpha-2 code and Region a short free text,
	// both optional and set by the donor.
	Country, Region string
	Version         string
	// Reachability is the relay's public address status (configured,
	// public, nat, none); Status is StatusOK or StatusStopped.
	Reachability string
	Status       string
	// Tracker is set when the relay also reads the directory and
	// health-checks its share of the relays in it (docs/directory.md):
	// readers spread their probes over the trackers they know.
	Tracker bool
	Updated time.Time
}

// Name is the payload element.
var Name = xml.Name{Space: NS, Local: "relay"}

func attr(name, value string) xml.Attr { return xml.Attr{Name: xml.Name{Local: name}, Value: value} }

func empty(local string, attrs ...xml.Attr) xml.TokenReader {
	return xmlstream.Wrap(nil, xml.StartElement{Name: xml.Name{Local: local}, Attr: attrs})
}

// TokenReader encodes the item's payload.
func (it Item) TokenReader() xml.TokenReader {
	var kids []xml.TokenReader
	if it.JingleNodes {
		kids = append(kids, empty("jingle-nodes", attr("protocol", "udp")))
	}
	for _, t := range it.TURN {
		kids = append(kids, empty("turn", attr("transport", t)))
	}
	kids = append(kids, empty("capacity", attr("free", strconv.Itoa(it.Free)), attr("total", strconv.Itoa(it.Total))))
	if it.Country != "" || it.Region != "" {
		var attrs []xml.Attr
		if it.Country != "" {
			attrs = append(attrs, attr("country", it.Country))
		}
		var text xml.TokenReader
		if it.Region != "" {
			text = xmlstream.Token(xml.CharData(it.Region))
		}
		kids = append(kids, xmlstream.Wrap(text, xml.StartElement{Name: xml.Name{Local: "location"}, Attr: attrs}))
	}
	kids = append(kids, empty("health", attr("reachability", it.Reachability), attr("status", it.Status)))
	if it.Tracker {
		kids = append(kids, empty("tracker"))
	}
	return xmlstream.Wrap(xmlstream.MultiReader(kids...), xml.StartElement{Name: Name, Attr: []xml.Attr{
		attr("jid", it.JID.String()), attr("policy", it.Policy), attr("version", it.Version),
		attr("updated", it.Updated.UTC().Format(itemTimeFormat)),
	}})
}

// ErrInvalid wraps every reason an item is refused.
var ErrInvalid = errors.New("invalid directory item")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// attrs returns start's attributes without a namespace, refusing
// duplicates and values past their bounds.
func attrs(start xml.StartElement) (map[string]string, error) {
	m := make(map[string]string, len(start.Attr))
	for _, a := range start.Attr {
		if a.Name.Space != "" {
			continue
		}
		if _, dup := m[a.Name.Local]; dup {
			return nil, invalid("<%s> repeats %s", start.Name.Local, a.Name.Local)
		}
		limit := MaxAttrLen
		if a.Name.Local == "jid" {
			limit = MaxJIDLen
		}
		if len(a.Value) > limit {
			return nil, invalid("<%s %s> is %d bytes long, more than %d", start.Name.Local, a.Name.Local, len(a.Value), limit)
		}
		m[a.Name.Local] = a.Value
	}
	return m, nil
}

func count(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > maxCapacity {
		return 0, invalid("capacity %q is not a number in 0-%d", s, maxCapacity)
	}
	return n, nil
}

// Parse reads the payload whose start element was read already; r yields
// the rest of it. Unknown attributes and elements are ignored, within the
// bounds above. now bounds the updated time (at most a little ahead).
func Parse(r xml.TokenReader, start xml.StartElement, now time.Time) (Item, error) {
	it, _, err := parse(r, start, now)
	return it, err
}

// parse is Parse that also says how many elements it left open, the
// payload included (0 when it read the payload's end; the caller skips
// the rest otherwise).
func parse(r xml.TokenReader, start xml.StartElement, now time.Time) (it Item, open int, err error) {
	it, err = parseTop(start, now)
	if err != nil {
		return it, 1, err
	}
	seen := map[string]bool{}
	tokens, depth := 0, 0
	var inLocation bool
	var region strings.Builder
	for {
		tok, err := r.Token()
		if err != nil {
			return it, 1 + depth, invalid("payload: %v", err)
		}
		if tokens++; tokens > maxTokens {
			return it, 1 + depth, invalid("payload longer than %d tokens", maxTokens)
		}
		switch t := tok.(type) {
		case xml.EndElement:
			if depth == 0 {
				it.Region = strings.TrimSpace(region.String())
				return it, 0, finish(&it, seen)
			}
			if depth--; depth == 0 {
				inLocation = false
			}
		case xml.CharData:
			if inLocation && depth == 1 {
				if region.Len()+len(t) > MaxRegionLen {
					return it, 1 + depth, invalid("region longer than %d bytes", MaxRegionLen)
				}
				region.Write(t)
			}
		case xml.StartElement:
			if depth++; depth > maxDepth {
				return it, 1 + depth, invalid("payload nested deeper than %d", maxDepth)
			}
			if depth > 1 || t.Name.Space != NS {
				continue // inside a child, or unknown: ignored
			}
			if err := child(&it, t, seen); err != nil {
				return it, 1 + depth, err
			}
			inLocation = t.Name.Local == "location"
		}
	}
}

// parseTop reads the payload element's attributes.
func parseTop(start xml.StartElement, now time.Time) (Item, error) {
	var it Item
	if start.Name != Name {
		return it, invalid("payload <%s xmlns=%q>, want <relay xmlns=%q>", start.Name.Local, start.Name.Space, NS)
	}
	top, err := attrs(start)
	if err != nil {
		return it, err
	}
	if it.JID, err = jid.Parse(top["jid"]); err != nil || top["jid"] == "" {
		return it, invalid("jid %q: %v", top["jid"], err)
	}
	it.Policy = top["policy"]
	if it.Policy != "public" {
		return it, invalid("policy %q, only public relays are listed", it.Policy)
	}
	if it.Version = top["version"]; len(it.Version) > maxVersionLen {
		return it, invalid("version longer than %d bytes", maxVersionLen)
	}
	if it.Updated, err = time.Parse(itemTimeFormat, top["updated"]); err != nil {
		return it, invalid("updated %q: %v", top["updated"], err)
	}
	if it.Updated.After(now.Add(maxFutureSkew)) {
		return it, invalid("updated %s is in the future", top["updated"])
	}
	return it, nil
}

// child reads the attributes of one known child element.
func child(it *Item, t xml.StartElement, seen map[string]bool) error {
	a, err := attrs(t)
	if err != nil {
		return err
	}
	name := t.Name.Local
	if name != "turn" && seen[name] {
		return invalid("<%s> given twice", name)
	}
	seen[name] = true
	switch name {
	case "jingle-nodes":
		if p := a["protocol"]; p == "" || p == "udp" {
			it.JingleNodes = true
		}
	case "turn":
		tr := a["transport"]
		if !turnTransports[tr] {
			return invalid("turn transport %q", tr)
		}
		if len(it.TURN) == MaxTURN {
			return invalid("more than %d <turn/>", MaxTURN)
		}
		it.TURN = append(it.TURN, tr)
	case "capacity":
		if it.Free, err = count(a["free"]); err != nil {
			return err
		}
		if it.Total, err = count(a["total"]); err != nil {
			return err
		}
		if it.Free > it.Total {
			return invalid("capacity free %d > total %d", it.Free, it.Total)
		}
	case "location":
		c := a["country"]
		if len(c) > maxCountryLen || c != "" && !upperLetters(c, maxCountryLen) {
			return invalid("country %q is not a two-letter code", c)
		}
		it.Country = c
	case "health":
		it.Reachability, it.Status = a["reachability"], a["status"]
	case "tracker":
		it.Tracker = true
	}
	return nil
}

func upperLetters(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range []byte(s) {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

// finish checks what an item must say.
func finish(it *Item, seen map[string]bool) error {
	if !seen["capacity"] {
		return invalid("no <capacity/>")
	}
	if !it.JingleNodes && len(it.TURN) == 0 {
		return invalid("neither <jingle-nodes/> nor <turn/>")
	}
	switch it.Status {
	case StatusOK, StatusStopped:
	default:
		return invalid("health status %q", it.Status)
	}
	return nil
}
