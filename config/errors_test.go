package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// Validation problems come as typed field errors in the document's
// notation, and their text is the "field: message" lines the loader
// prints.
func TestValidateReturnsFieldErrors(t *testing.T) {
	cfg := Default()
	cfg.Ports = PortRange{Min: 1, Max: 2}
	cfg.Log.Format = "xml"
	cfg.XMPP = []Service{{Type: "bosh"}}
	err := cfg.Validate()
	var inv *Invalid
	if !errors.As(err, &inv) {
		t.Fatalf("not an *Invalid: %T %v", err, err)
	}
	want := []FieldError{
		{"ports.min", "1 is outside 1024-65535"},
		{"log.format", `"xml" is not one of text, json`},
		{"xmpp[0].type", `"bosh" is not one of component, client`},
	}
	if !reflect.DeepEqual(inv.Fields, want) {
		t.Fatalf("fields %#v\nwant %#v", inv.Fields, want)
	}
	if got := err.Error(); got != "ports.min: 1 is outside 1024-65535\nlog.format: \"xml\" is not one of text, json\nxmpp[0].type: \"bosh\" is not one of component, client" {
		t.Fatalf("text %q", got)
	}
}

// Validate only checks; the names a service gets by default are filled by
// FillDefaults (decoding calls it).
func TestValidateFillsNothing(t *testing.T) {
	cfg := Default()
	cfg.XMPP = []Service{{Type: ServiceComponent, Server: "h:1", Domain: "relay.example.org", Secret: "s"},
		{Type: ServiceClient, JID: "r@example.org", Password: "p"}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.XMPP[0].Name != "" || cfg.XMPP[1].Name != "" {
		t.Fatalf("Validate changed the names: %+v", cfg.XMPP)
	}
	cfg.FillDefaults()
	if cfg.XMPP[0].Name != "relay.example.org" || cfg.XMPP[1].Name != "r@example.org" {
		t.Fatalf("FillDefaults: %+v", cfg.XMPP)
	}
	// Two unnamed services with the same default name still collide.
	cfg.XMPP = append(cfg.XMPP, Service{Type: ServiceComponent, Server: "h:2", Domain: "relay.example.org", Secret: "s"})
	cfg.XMPP[0].Name = ""
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `xmpp[2].name: "relay.example.org" is also the name of xmpp[0]`) {
		t.Fatalf("duplicate default names: %v", err)
	}
}

func genericValue(t *testing.T, doc string) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(doc)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// DecodeValue names every unknown key and wrongly typed value at once.
func TestDecodeValueNamesEveryKey(t *testing.T) {
	doc := `{"expire": 60, "ports": {"min": "x"}, "stun": {"enabled": 1},
		"xmpp": [{"type": "component"}, {"type": "component", "secrett": "x", "allow": "a"}]}`
	_, err := DecodeValue(genericValue(t, doc))
	var inv *Invalid
	if !errors.As(err, &inv) {
		t.Fatalf("not an *Invalid: %T %v", err, err)
	}
	want := []FieldError{
		{"expire", "unknown key"},
		{"ports.min", `must be an integer, got "x"`},
		{"stun.enabled", "must be true or false, got 1"},
		{"xmpp[1].allow", `must be an array, got "a"`},
		{"xmpp[1].secrett", "unknown key"},
	}
	if !reflect.DeepEqual(inv.Fields, want) {
		t.Fatalf("fields %#v\nwant %#v", inv.Fields, want)
	}
	if _, err := DecodeValue(genericValue(t, `[1]`)); !errors.Is(err, ErrNotObject) {
		t.Fatalf("array document: %v", err)
	}
}

// DecodeValue fills the defaults as the loader does, and validates
// nothing.
func TestDecodeValueFillsDefaults(t *testing.T) {
	cfg, err := DecodeValue(genericValue(t, `{"ports": {"min": 1}, "xmpp": [{"type": "client", "jid": "r@example.org"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Ports.Min != 1 || cfg.Ports.Max != Default().Ports.Max || cfg.XMPP[0].Name != "r@example.org" || cfg.Log != Default().Log {
		t.Fatalf("%+v", cfg)
	}
}

// A vocabulary's value of the wrong JSON type is named by its JSON kind
// in the loader's message, as a plain string key is.
func TestLoaderNamesVocabularyTypes(t *testing.T) {
	_, err := Parse(strings.NewReader(`{"xmpp": [{"type": 5}]}`))
	if err == nil || err.Error() != "xmpp.type: must be string, got JSON number" {
		t.Fatalf("got %v", err)
	}
}
