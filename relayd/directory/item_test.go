package directory

import (
	"bytes"
	"encoding/xml"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
)

var testNow = time.Date(2026, 12, 6, 19, 0, 0, 0, time.UTC)

func sample() Item {
	return Item{JID: jid.MustParse("relay.example.org"), Policy: "public", JingleNodes: true, TURN: []string{"udp", "tls"},
		Free: 40, Total: 50, Country: "DE", Region: "Berlin area", Version: "jnrelay 1.0",
		Reachability: "public", Status: StatusOK, Tracker: true, Updated: testNow.Add(-time.Minute)}
}

func encode(t testing.TB, r xml.TokenReader) string {
	t.Helper()
	var b bytes.Buffer
	e := xml.NewEncoder(&b)
	if _, err := xmlstream.Copy(e, r); err != nil {
		t.Fatal(err)
	}
	if err := e.Flush(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func parseString(s string) (Item, error) { return parseAt(s, testNow) }

func parseAt(s string, now time.Time) (Item, error) {
	d := xml.NewDecoder(strings.NewReader(s))
	for {
		tok, err := d.Token()
		if err != nil {
			return Item{}, err
		}
		if start, ok := tok.(xml.StartElement); ok {
			return Parse(d, start, now)
		}
	}
}

func TestItemRoundTrip(t *testing.T) {
	it := sample()
	got, err := parseString(encode(t, it.TokenReader()))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, it) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, it)
	}
}

func TestParseIgnoresUnknown(t *testing.T) {
	doc := `<relay xmlns='urn:xmpp:jnrelay:directory:0' jid='r.example' policy='public' updated='2026-12-06T18:00:00Z' extra='x'>
		<future xmlns='urn:other'><deep/></future><jingle-nodes/><capacity free='1' total='2' unit='x'/>
		<health status='ok'/><later>text</later></relay>`
	it, err := parseString(doc)
	if err != nil {
		t.Fatal(err)
	}
	if !it.JingleNodes || it.Free != 1 || it.Total != 2 || it.JID.String() != "r.example" {
		t.Errorf("parsed %+v", it)
	}
}

func TestParseRefuses(t *testing.T) {
	const head = `<relay xmlns='urn:xmpp:jnrelay:directory:0' jid='r.example' policy='public' updated='2026-12-06T18:00:00Z'>`
	const ok = `<jingle-nodes/><capacity free='1' total='2'/><health status='ok'/>`
	for name, doc := range map[string]string{
		"roster policy":    strings.Replace(head, "public", "roster", 1) + ok + `</relay>`,
		"no jid":           strings.Replace(head, "jid='r.example'", "", 1) + ok + `</relay>`,
		"bad jid":          strings.Replace(head, "r.example", "@@", 1) + ok + `</relay>`,
		"future":           strings.Replace(head, "2026-12-06T18", "2026-12-07T18", 1) + ok + `</relay>`,
		"no time":          strings.Replace(head, "updated=", "x=", 1) + ok + `</relay>`,
		"wrong ns":         strings.Replace(head, "directory:0", "directory:1", 1) + ok + `</relay>`,
		"no capacity":      head + `<jingle-nodes/><health status='ok'/></relay>`,
		"free over total":  head + `<jingle-nodes/><capacity free='3' total='2'/><health status='ok'/></relay>`,
		"negative":         head + `<jingle-nodes/><capacity free='-1' total='2'/><health status='ok'/></relay>`,
		"huge capacity":    head + `<jingle-nodes/><capacity free='1' total='99999999999'/><health status='ok'/></relay>`,
		"no service":       head + `<capacity free='1' total='2'/><health status='ok'/></relay>`,
		"bad status":       head + `<jingle-nodes/><capacity free='1' total='2'/><health status='fine'/></relay>`,
		"bad turn":         head + ok + `<turn transport='sctp'/></relay>`,
		"twice":            head + ok + `<capacity free='1' total='2'/></relay>`,
		"tracker twice":    head + ok + `<tracker/><tracker/></relay>`,
		"country":          head + ok + `<location country='Germany'/></relay>`,
		"long region":      head + ok + `<location>` + strings.Repeat("x", MaxRegionLen+1) + `</location></relay>`,
		"long attribute":   head + ok + `<health reachability='` + strings.Repeat("x", MaxAttrLen+1) + `'/></relay>`,
		"too many turn":    head + ok + strings.Repeat(`<turn transport='udp'/>`, MaxTURN+1) + `</relay>`,
		"too many tokens":  head + ok + strings.Repeat(`<x/>`, maxTokens) + `</relay>`,
		"too deep":         head + ok + strings.Repeat(`<x>`, maxDepth+1) + strings.Repeat(`</x>`, maxDepth+1) + `</relay>`,
		"duplicate attrib": `<relay xmlns='urn:xmpp:jnrelay:directory:0' jid='r.example' jid='s.example' policy='public' updated='2026-12-06T18:00:00Z'>` + ok + `</relay>`,
	} {
		if _, err := parseString(doc); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", name, err)
		}
	}
}

// itemsDoc is an items result holding the given <item/> elements.
func itemsDoc(items ...string) string {
	return `<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='relays'>` + strings.Join(items, "") + `</items></pubsub>`
}

func decodeItems(t testing.TB, doc string) Items {
	t.Helper()
	is := Items{now: func() time.Time { return testNow }}
	if err := xml.Unmarshal([]byte(doc), &is); err != nil {
		t.Fatalf("decode %q: %v", doc, err)
	}
	return is
}

func TestItemsSkipBadPayloads(t *testing.T) {
	good := encode(t, sample().TokenReader())
	// A bad item stops parsing at different depths; the next one must
	// still be read whole.
	bad1 := strings.Replace(good, "policy=\"public\"", "policy=\"roster\"", 1)
	bad2 := strings.Replace(good, "transport=\"tls\"", "transport=\"x\"", 1)
	bad3 := strings.Replace(good, "<capacity", "<a><b><c><d><e><f><g><h><i></i></h></g></f></e></d></c></b></a><capacity", 1)
	doc := itemsDoc(
		`<item id='a'>`+bad1+`</item>`,
		`<item id='b'>`+bad2+`</item>`,
		`<item id='c'>`+bad3+`</item>`,
		`<item id='d'/>`,
		`<item id='relay.example.org' publisher='relay.example.org'>`+good+`<extra/></item>`,
	)
	is := decodeItems(t, doc)
	if is.Node != "relays" || len(is.Entries) != 5 {
		t.Fatalf("decoded %+v", is)
	}
	for _, e := range is.Entries[:4] {
		if e.Err == nil {
			t.Errorf("item %s accepted", e.ID)
		}
	}
	last := is.Entries[4]
	if trust, err := last.Check(); trust != Verified || err != nil {
		t.Errorf("good item: %v %v", trust, err)
	}
}

func TestEventRetract(t *testing.T) {
	doc := `<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='relays'><retract id='relay.example.org'/></items></event>`
	is := decodeItems(t, doc)
	if len(is.Entries) != 1 || !is.Entries[0].Retracted || is.Entries[0].ID != "relay.example.org" {
		t.Errorf("decoded %+v", is)
	}
}

func TestItemsBounded(t *testing.T) {
	good := encode(t, sample().TokenReader())
	var items []string
	for range MaxItems + 10 {
		items = append(items, `<item id='relay.example.org'>`+good+`</item>`)
	}
	if is := decodeItems(t, itemsDoc(items...)); len(is.Entries) != MaxItems {
		t.Errorf("kept %d entries, want %d", len(is.Entries), MaxItems)
	}
}

func TestTrustRule(t *testing.T) {
	it := sample()
	account := sample()
	account.JID = jid.MustParse("relay@example.org/res1")
	for name, c := range map[string]struct {
		e    Entry
		want Trust
	}{
		"own domain":        {Entry{ID: "relay.example.org", Publisher: "relay.example.org", Item: it}, Verified},
		"own account":       {Entry{ID: "relay@example.org/res1", Publisher: "relay@example.org/res2", Item: account}, Verified},
		"own account, bare": {Entry{ID: "relay@example.org/res1", Publisher: "relay@example.org", Item: account}, Verified},
		"no publisher":      {Entry{ID: "relay.example.org", Item: it}, Unverified},
		"someone else":      {Entry{ID: "relay.example.org", Publisher: "mallory@example.org", Item: it}, Refused},
		"id is not the jid": {Entry{ID: "other.example.org", Publisher: "relay.example.org", Item: it}, Refused},
		"parse error":       {Entry{ID: "relay.example.org", Item: it, Err: ErrInvalid}, Refused},
		"retraction":        {Entry{ID: "relay.example.org", Retracted: true}, Refused},
	} {
		if got, err := c.e.Check(); got != c.want || (got == Refused) != (err != nil) {
			t.Errorf("%s: trust %v (%v), want %v", name, got, err, c.want)
		}
	}
}
