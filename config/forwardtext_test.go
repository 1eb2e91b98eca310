package config

import (
	"strings"
	"testing"
)

// TestForwardText: the advice names exactly InboundPorts, in the words
// the NAT warning and the reachability advice have always used (the e2e
// tests and docs/configuration.md quote the default).
func TestForwardText(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"defaults", `{}`, "UDP ports 40000-40999 and 3478"},
		{"no STUN", `{"stun": {"enabled": false}, "ports": {"min": 50000, "max": 50099}}`, "UDP ports 50000-50099"},
		{"TURN over UDP only", `{"turn": {"builtin": {"enabled": true, "tcp": false}}}`,
			"UDP ports 40000-40999 and 3478, UDP port 3479 (TURN)"},
		{"TURN over UDP and TCP", `{"turn": {"builtin": {"enabled": true}}}`,
			"UDP ports 40000-40999 and 3478, UDP and TCP port 3479 (TURN)"},
		{"TURN without STUN", `{"stun": {"enabled": false}, "turn": {"builtin": {"enabled": true, "port": 3478}}}`,
			"UDP ports 40000-40999, UDP and TCP port 3478 (TURN)"},
		// Not forwarded: relayd cannot bind it (and the firewall does
		// not open it).
		{"privileged STUN port left out", `{"stun": {"port": 53}}`, "UDP ports 40000-40999"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse(strings.NewReader(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.ForwardText(); got != tc.want {
				t.Errorf("ForwardText = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestForwardTextUnvalidated covers what a document cannot say without a
// certificate file (TLS) or a channel's worth of ports (a single-port
// range): the wording reads only the ports.
func TestForwardTextUnvalidated(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"TURN over UDP, TCP and TLS", func(c *Config) {
			c.TURN.Builtin = BuiltinTURN{Enabled: true, Port: 3480, TCP: true, TLSPort: 5349}
		}, "UDP ports 40000-40999 and 3478, UDP and TCP port 3480 (TURN), TCP port 5349 (TURN over TLS)"},
		// Without TURN over TCP the TLS listener may take the TURN
		// port number: the two stay apart, each with its protocol.
		{"TURN over UDP and TLS on the same number", func(c *Config) {
			c.TURN.Builtin = BuiltinTURN{Enabled: true, Port: 3479, TLSPort: 3479}
		}, "UDP ports 40000-40999 and 3478, UDP port 3479 (TURN), TCP port 3479 (TURN over TLS)"},
		{"privileged TLS port left out", func(c *Config) {
			c.TURN.Builtin = BuiltinTURN{Enabled: true, Port: 3479, TCP: true, TLSPort: 443}
		}, "UDP ports 40000-40999 and 3478, UDP and TCP port 3479 (TURN)"},
		{"single-port range with STUN", func(c *Config) { c.Ports = PortRange{Min: 40000, Max: 40000} },
			"UDP ports 40000 and 3478"},
		{"single-port range alone", func(c *Config) {
			c.Ports, c.STUN.Enabled = PortRange{Min: 40000, Max: 40000}, false
		}, "UDP port 40000"},
		{"no port at all", func(c *Config) {
			c.Ports, c.STUN.Enabled = PortRange{}, false
		}, "the relay's ports"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			tc.edit(&cfg)
			if got := cfg.ForwardText(); got != tc.want {
				t.Errorf("ForwardText = %q, want %q", got, tc.want)
			}
		})
	}
}
