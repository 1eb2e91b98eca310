package jinglenodes

import (
	"bytes"
	"encoding/xml"
	"reflect"
	"testing"

	"mellium.im/xmlstream"
)

// A <services/> document reads back as it was written, defaults filled.
func TestServicesRoundTrip(t *testing.T) {
	in := Services{Listings: []Listing{
		{Kind: ListingRelay, Policy: ListingRoster, Address: "donor@example.net/relayd", Protocol: "udp"},
		{Kind: ListingTracker, Address: "tracker.example.net"},
		{Kind: ListingSTUN, Address: "203.0.113.7", Port: 3478},
	}}
	var buf bytes.Buffer
	enc := xml.NewEncoder(&buf)
	if _, err := xmlstream.Copy(enc, in.TokenReader()); err != nil {
		t.Fatal(err)
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	var out Services
	if err := xml.Unmarshal(buf.Bytes(), &out); err != nil {
		t.Fatalf("%s: %v", buf.String(), err)
	}
	want := []Listing{
		{Kind: ListingRelay, Policy: ListingRoster, Address: "donor@example.net/relayd", Protocol: "udp"},
		{Kind: ListingTracker, Policy: ListingPublic, Address: "tracker.example.net", Protocol: "udp"},
		{Kind: ListingSTUN, Policy: ListingPublic, Address: "203.0.113.7", Port: 3478, Protocol: "udp"},
	}
	if !reflect.DeepEqual(out.Listings, want) {
		t.Fatalf("read back %+v from %s, want %+v", out.Listings, buf.String(), want)
	}
}

func TestServicesParseIsLenient(t *testing.T) {
	var s Services
	doc := `<services xmlns='http://jabber.org/protocol/jinglenodes'><relay address='r.example'><x/></relay><stun address='192.0.2.1' port='x'/></services>`
	if err := xml.Unmarshal([]byte(doc), &s); err != nil {
		t.Fatal(err)
	}
	want := []Listing{{Kind: ListingRelay, Address: "r.example"}, {Kind: ListingSTUN, Address: "192.0.2.1"}}
	if !reflect.DeepEqual(s.Listings, want) {
		t.Fatalf("got %+v, want %+v (missing attributes empty, a bad port 0)", s.Listings, want)
	}
	if err := xml.Unmarshal([]byte(`<services xmlns='urn:other'/>`), &s); err == nil {
		t.Fatal("a <services/> of another namespace was read")
	}
}
