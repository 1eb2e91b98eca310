package config

import (
	"strings"
	"testing"
)

func TestInboundPorts(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"defaults", `{}`, []string{"udp 40000-40999", "udp 3478"}},
		{"no STUN", `{"stun": {"enabled": false}, "ports": {"min": 50000, "max": 50099}}`, []string{"udp 50000-50099"}},
		{"TURN over UDP only", `{"turn": {"builtin": {"enabled": true, "tcp": false}}}`, []string{"udp 40000-40999", "udp 3478", "udp 3479"}},
		// relayd cannot bind a port below 1024; the firewall never
		// opens one for it.
		{"privileged STUN port left closed", `{"stun": {"port": 53}}`, []string{"udp 40000-40999"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse(strings.NewReader(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range cfg.InboundPorts() {
				got = append(got, p.String())
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("InboundPorts = %q, want %q", got, tc.want)
			}
		})
	}
}

// TLS needs a certificate file to pass validation; the listing itself
// only reads the ports.
func TestInboundPortsTURNOverTLS(t *testing.T) {
	cfg := Default()
	cfg.TURN.Builtin = BuiltinTURN{Enabled: true, Port: 3480, TCP: true, TLSPort: 5349}
	var got []string
	for _, p := range cfg.InboundPorts() {
		got = append(got, p.String())
	}
	want := "udp 40000-40999,udp 3478,udp 3480,tcp 3480,tcp 5349"
	if strings.Join(got, ",") != want {
		t.Errorf("InboundPorts = %q, want %s", got, want)
	}
}
