package jinglenodes

import (
	"bytes"
	"encoding/xml"
	"strings"
	"testing"
)

// FuzzHandleIQ feeds arbitrary stanzas to the handler: it must never panic
// and must answer every addressable get/set IQ exactly once, with a result
// or an error of the same id.
func FuzzHandleIQ(f *testing.F) {
	for _, s := range []string{
		`<iq type='get' id='1' from='a@b/c' to='relay.example.org'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel' protocol='udp'/></iq>`,
		`<iq type='get' id='2' from='a@b/c' to='relay.example.org'><candidate xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`,
		`<iq type='get' id='3' from='a@b/c' to='relay.example.org'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel' protocol='tcp'/></iq>`,
		`<iq type='get' id='4' from='a@b/c' to='relay.example.org'><services xmlns='http://jabber.org/protocol/jinglenodes'/></iq>`,
		`<iq type='get' id='5' from='a@b/c'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
		`<iq type='get' id='6' from='a@b/c'><query xmlns='http://jabber.org/protocol/disco#items' node='n'/></iq>`,
		`<iq type='get' id='7' from='a@b/c'><ping xmlns='urn:xmpp:ping'/></iq>`,
		`<iq type='set' id='8' from='a@b/c'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'><a><b><c/></b></a></channel></iq>`,
		`<iq type='get' id='9' from='@'><x/><y/></iq>`,
		`<iq type='result' id='10'/>`,
		`<iq type='get' id='11' from='a@b/c'></iq>`,
		`<message><body>x</body></message>`,
		`<iq type='get' id='12' from='a@b/c'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel' xmlns:p='urn:p' p:q='1' protocol='sctp' protocol='udp' host='h'/></iq>`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := xml.NewDecoder(bytes.NewReader(data))
		var start xml.StartElement
		for {
			tok, err := d.Token()
			if err != nil {
				return // not even a start element
			}
			if s, ok := tok.(xml.StartElement); ok {
				start = s
				break
			}
		}
		_, h, _ := newTestService(&fakeAllocator{left: 1})
		var out bytes.Buffer
		enc := xml.NewEncoder(&out)
		if err := h.HandleXMPP(rw{d, enc}, &start); err != nil {
			return // the stream itself is broken: the session ends, no answer owed
		}
		if err := enc.Flush(); err != nil {
			t.Fatal(err)
		}
		id, typ := attrValue(start.Attr, "id"), attrValue(start.Attr, "type")
		_, dup := duplicateAttr(start.Attr) // not well-formed: nobody to answer
		mustAnswer := start.Name.Local == "iq" && id != "" && (typ == "get" || typ == "set") && !dup
		if !mustAnswer {
			if out.Len() != 0 && start.Name.Local != "iq" {
				t.Fatalf("answered a non-IQ: %s", out.String())
			}
			return
		}
		if strings.Count(out.String(), "<iq ") != 1 {
			t.Fatalf("want exactly one answer, got %q", out.String())
		}
		var r reply
		if err := xml.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("answer does not parse: %v: %s", err, out.String())
		}
		if r.ID != id || (r.Type != "result" && r.Type != "error") {
			t.Fatalf("answer id=%q type=%q for id=%q: %s", r.ID, r.Type, id, out.String())
		}
		// A repeated attribute (an echo copying the request's) would make
		// the answer not well-formed, which encoding/xml does not check.
		ad := xml.NewDecoder(bytes.NewReader(out.Bytes()))
		for {
			tok, err := ad.RawToken()
			if err != nil {
				break
			}
			if el, ok := tok.(xml.StartElement); ok {
				if name, dup := duplicateAttr(el.Attr); dup {
					t.Fatalf("answer repeats attribute %s: %s", name, out.String())
				}
			}
		}
	})
}
