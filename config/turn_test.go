package config

import (
	"errors"
	"strings"
	"testing"
)

func TestBuiltinTURNDefaults(t *testing.T) {
	cfg, err := Parse(strings.NewReader(`{"turn": {"builtin": {"enabled": true}}, ` + minimal[1:]))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.TURN.Builtin
	if !b.Enabled || b.Port != 3479 || !b.TCP || b.Realm != "jnrelay" || cfg.TURN.TTLSeconds != 86400 {
		t.Fatalf("built-in TURN defaults: %+v ttl %d", b, cfg.TURN.TTLSeconds)
	}
	// Off by default, and an existing external server stays valid.
	cfg, err = Parse(strings.NewReader(`{"turn": {"host": "turn.example.org", "secret": "x"}, ` + minimal[1:]))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TURN.Builtin.Enabled {
		t.Fatal("built-in TURN enabled by default")
	}
	// Steered ports serve TURN allocations too: a relay port is a socket
	// of its own, which the steering program leaves alone.
	if _, err := Parse(strings.NewReader(`{"channel": {"sockets": "steered"}, "turn": {"builtin": {"enabled": true}}, ` + minimal[1:])); err != nil {
		t.Fatalf("steered ports with the built-in TURN server: %v", err)
	}
}

func TestBuiltinTURNFieldErrors(t *testing.T) {
	cases := []struct{ doc, field, want string }{
		{`{"turn": {"host": "turn.example.org", "secret": "x", "builtin": {"enabled": true}}, `, "turn.builtin.enabled", "not with turn.host"},
		{`{"turn": {"builtin": {"enabled": true, "port": 3478}}, `, "turn.builtin.port", "the STUN server's port"},
		{`{"turn": {"builtin": {"enabled": true, "port": 0}}, `, "turn.builtin.port", "outside 1-65535"},
		{`{"turn": {"builtin": {"enabled": true, "port": 40002}}, `, "turn.builtin.port", "inside the relay port range"},
		{`{"turn": {"builtin": {"enabled": true, "realm": ""}}, `, "turn.builtin.realm", "required"},
		{`{"turn": {"builtin": {"enabled": true, "realm": "a\"b"}}, `, "turn.builtin.realm", "quote"},
		{`{"turn": {"builtin": {"enabled": true, "realm": "` + strings.Repeat("r", 128) + `"}}, `, "turn.builtin.realm", "longer than 127"},
		{`{"turn": {"secret": "a", "secret_file": "b", "builtin": {"enabled": true}}, `, "turn.secret", "not both"},
		{`{"turn": {"ttl_seconds": 10, "builtin": {"enabled": true}}, `, "turn.ttl_seconds", "outside 60-604800"},
	}
	for _, c := range cases {
		doc := c.doc + minimal[1:]
		_, err := Parse(strings.NewReader(doc))
		var inv *Invalid
		if !errors.As(err, &inv) {
			t.Errorf("%s: got %v, want field errors", doc, err)
			continue
		}
		found := false
		for _, f := range inv.Fields {
			found = found || (f.Field == c.field && strings.Contains(f.Message, c.want))
		}
		if !found {
			t.Errorf("%s:\n got  %v\n want %s: …%s…", doc, err, c.field, c.want)
		}
	}
	// The STUN port is free for TURN when STUN is off.
	if _, err := Parse(strings.NewReader(`{"stun": {"enabled": false}, "turn": {"builtin": {"enabled": true, "port": 3478}}, ` + minimal[1:])); err != nil {
		t.Fatal(err)
	}
}
