package config

import (
	"strings"
	"testing"
)

func TestDirectory(t *testing.T) {
	const pub = `"directory": {"publish": [{"service": "pubsub.example.org", "node": "relays"}], "country": "DE", "region": "Berlin area"}`
	cfg, err := Parse(strings.NewReader(`{` + pub + `, "xmpp": [{"type": "client", "jid": "relay@example.org", "password": "pw"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.Directory; len(d.Publish) != 1 || d.Publish[0].Node != "relays" || d.RefreshSeconds != 300 || d.Country != "DE" {
		t.Errorf("directory %+v", d)
	}
	for doc, want := range map[string]string{
		// A roster-policy relay is never published.
		`{` + pub + `, "xmpp": [{"type": "client", "jid": "relay@example.org", "password": "pw", "policy": "roster"}]}`: "directory.publish: no XMPP service has the public policy",
		`{` + pub + `}`: "directory.publish: no XMPP service has the public policy",
		`{"directory": {"subscribe": [{"service": "user@example.org", "node": "relays"}]}}`:                 `directory.subscribe[0].service: "user@example.org" is not a service's domain`,
		`{"directory": {"subscribe": [{"service": "pubsub.example.org", "node": ""}]}}`:                     "directory.subscribe[0].node: must be 1-256 bytes long",
		`{"directory": {"subscribe": [{"service": "pubsub.example.org", "node": "n", "session": "nope"}]}}`: `directory.subscribe[0].session: no xmpp service is named "nope"`,
		`{"directory": {"publish": [{"service": "pubsub.example.org", "node": "n", "session": "r@example.org"}]}, "xmpp": [{"type": "client", "jid": "r@example.org", "password": "pw", "policy": "roster"}, {"type": "client", "jid": "s@example.org", "password": "pw"}]}`: `directory.publish[0].session: "r@example.org" has the roster policy`,
		`{"directory": {"country": "de"}}`:                             `directory.country: "de" is not a two-letter`,
		`{"directory": {"region": "` + strings.Repeat("x", 65) + `"}}`: "directory.region: longer than 64 bytes",
		`{"directory": {"refresh_seconds": 1}}`:                        "directory.refresh_seconds: 1 is outside 5-3600",
		`{"directory": {"subscribe": [` + strings.Repeat(`{"service": "p.example", "node": "n"},`, 8) + `{"service": "p.example", "node": "n"}]}}`: "directory.subscribe: 9 nodes, at most 8",
	} {
		if _, err := Parse(strings.NewReader(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want %q", doc, err, want)
		}
	}
}
