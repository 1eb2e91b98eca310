package directory

import (
	"encoding/xml"
	"reflect"
	"testing"
	"time"
)

// FuzzItems decodes arbitrary items results: it must never panic, never
// keep more than MaxItems entries, and every item it accepts must encode
// and parse back to itself.
func FuzzItems(f *testing.F) {
	good := encode(f, sample().TokenReader())
	for _, s := range []string{
		itemsDoc(`<item id='relay.example.org' publisher='relay.example.org'>` + good + `</item>`),
		itemsDoc(`<item id='x'><relay xmlns='urn:xmpp:jnrelay:directory:0' jid='x' policy='public' updated='2026-01-01T00:00:00Z'><turn transport='tcp'/><capacity free='0' total='0'/><location country='FR'> Lyon </location><health status='stopped'/></relay></item>`),
		itemsDoc(`<item id='t@x/r' publisher='t@x'><relay xmlns='urn:xmpp:jnrelay:directory:0' jid='t@x/r' policy='public' updated='2026-01-01T00:00:00Z'><jingle-nodes/><capacity free='1' total='2'/><health reachability='behind_nat' status='ok'/><tracker/><tracker x='1'/></relay></item>`),
		itemsDoc(`<item id='y'><relay xmlns='urn:xmpp:jnrelay:directory:0'><a><b/></a></relay><z/></item>`, `<retract id='q'/>`),
		`<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='n'><retract id='r'/></items></event>`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		is := Items{now: func() time.Time { return testNow }}
		if err := xml.Unmarshal(data, &is); err != nil {
			return
		}
		if len(is.Entries) > MaxItems {
			t.Fatalf("%d entries", len(is.Entries))
		}
		for _, e := range is.Entries {
			if e.Err != nil || e.Retracted {
				continue
			}
			again, err := parseString(encode(t, e.Item.TokenReader()))
			if err != nil {
				t.Fatalf("accepted item %+v does not parse back: %v", e.Item, err)
			}
			if !reflect.DeepEqual(again, e.Item) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", again, e.Item)
			}
		}
	})
}
