package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const minimal = `{"xmpp": [{"type": "component", "server": "127.0.0.1:5347", "domain": "relay.example.org", "secret": "s3cret"}]}`

func TestMinimalGetsDefaults(t *testing.T) {
	cfg, err := Parse(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if cfg.Ports != d.Ports || !reflect.DeepEqual(cfg.Channel, d.Channel) || cfg.ListenAddress != "0.0.0.0" || cfg.Log != d.Log {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
	if cfg.XMPP[0].Name != "relay.example.org" {
		t.Fatalf("service name defaults to domain, got %q", cfg.XMPP[0].Name)
	}
	if cfg.Channel.Expire().Seconds() != 60 {
		t.Fatalf("expire %s", cfg.Channel.Expire())
	}
}

// A fresh device has no XMPP service yet: relayd must start (the donor
// sets one up through the API), so an empty document is valid.
func TestNoServiceIsValid(t *testing.T) {
	for _, doc := range []string{`{}`, `{"xmpp": []}`} {
		cfg, err := Parse(strings.NewReader(doc))
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		if len(cfg.XMPP) != 0 || cfg.Channel.Drain() != 30*time.Second {
			t.Fatalf("%s: %+v", doc, cfg)
		}
	}
}

func TestExampleFileIsValid(t *testing.T) {
	// The example shipped in docs must always load.
	if _, err := Load(filepath.Join("..", "docs", "relayd.example.json")); err != nil {
		t.Fatal(err)
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	cases := []struct{ doc, want string }{
		{`{"channel": {"drain_seconds": -1}, ` + minimal[1:], "channel.drain_seconds: -1 is outside 0-3600"},
		{`{"channel": {"sockets": "shared"}, ` + minimal[1:], `channel.sockets: "shared" is not per_port, steered or auto`},
		{`{"channel": {"sockets": "steered"}, "listen_address": "::", ` + minimal[1:], "channel.sockets: steered needs an IPv4 listen_address, not ::"},
		{`{"channel": {"sockets": "steered", "fast_path": "nftables"}, ` + minimal[1:], "channel.sockets: steered cannot be combined with fast_path nftables"},
		{`{"channel": {"fast_path": "xdp"}, ` + minimal[1:], `channel.fast_path: "xdp" is not auto, ebpf, flowtable, nftables or off`},
		{`{"channel": {"offload_socket": "run/offload.sock"}, ` + minimal[1:], `channel.offload_socket: "run/offload.sock" is not an absolute path of at most 107 bytes`},
		{`{"limits": {"monthly_quota_mb": -5}, ` + minimal[1:], "limits.monthly_quota_mb: -5 is outside"},
		{`{"limits": {"daily_quota_gb": 5}, ` + minimal[1:], `unknown key "daily_quota_gb"`},
		{`{"limits": {"max_channels_per_domain": -2}, ` + minimal[1:], "limits.max_channels_per_domain: -2 is outside -1-1000000"},
		{`{"ports": {"min": 40001, "max": 40003}, ` + minimal[1:], "ports: 40001-40003 holds no channel"},
		{`{"ports": {"min": 80, "max": 40003}, ` + minimal[1:], "ports.min: 80 is outside"},
		{`{"channel": {"expire_seconds": 0}, ` + minimal[1:], "channel.expire_seconds: 0 is outside"},
		{`{"channel": {"expire_seconds": "60"}, ` + minimal[1:], "channel.expire_seconds: must be int"},
		{`{"channel": {"max_kbps": -1}, ` + minimal[1:], "channel.max_kbps: -1"},
		{`{"public_address": "relay.example.org", ` + minimal[1:], "public_address: not an IP address"},
		{`{"public_address": "0.0.0.0", ` + minimal[1:], "public_address: 0.0.0.0 cannot be reached"},
		{`{"listen_address": "x", ` + minimal[1:], "listen_address: not an IP address"},
		{`{"public_address6": "203.0.113.10", ` + minimal[1:], `public_address6: not an IPv6 address: "203.0.113.10"`},
		{`{"public_address6": "::ffff:203.0.113.10", ` + minimal[1:], "public_address6: not an IPv6 address"},
		{`{"public_address6": "2001:db8::1%eth0", ` + minimal[1:], "public_address6: not an IPv6 address"},
		{`{"public_address6": "fe80::1", ` + minimal[1:], "public_address6: fe80::1 cannot be reached"},
		{`{"public_address6": "::", ` + minimal[1:], "public_address6: :: cannot be reached"},
		{`{"log": {"level": "loud"}, ` + minimal[1:], `log.level: "loud" is not one of`},
		{`{"reconnect": {"min_seconds": 10, "max_seconds": 5}, ` + minimal[1:], "reconnect.max_seconds"},
		{`{"expire": 60, ` + minimal[1:], `unknown key "expire"`},
		{`{"tracker": {"refresh_seconds": 0}, ` + minimal[1:], `tracker.refresh_seconds: 0 is outside`},
		{`{"reachability": {"interval_minutes": 1}, ` + minimal[1:], `reachability.interval_minutes: 1 is outside 5-1440`},
		{`{"reachability": {"stun_servers": ["stun.example.org"]}, ` + minimal[1:], `reachability.stun_servers[0]: "stun.example.org" is not host:port`},
		{`{"reachability": {"stun_servers": ["a:1", "b:1", "c:1", "d:1", "e:1"]}, ` + minimal[1:], `reachability.stun_servers: 5 servers: at most 4`},
		{`{"stun": {"enabled": true, "port": 40002}, ` + minimal[1:], `stun.port: 40002 is inside the relay port range`},
		{`{"turn": {"host": "turn.example.org", "transport": "sctp"}, ` + minimal[1:], `turn.transport: "sctp"`},
		{`{"turn": {"host": "turn.example.org"}, ` + minimal[1:], `turn.secret: required`},
		{`{"tracker": {"trackers": ["a@@b"]}, ` + minimal[1:], `tracker.trackers[0]: "a@@b" is not a JID`},
		{`{"xmpp": [{"type": "bosh", "server": "h:1", "domain": "d", "secret": "s"}]}`, `xmpp[0].type: "bosh" is not one of component, client`},
		{`{"xmpp": [{"type": "client", "server": "h:1", "domain": "d", "secret": "s"}]}`, `xmpp[0].jid: "" is not an account JID`},
		{`{"xmpp": [{"type": "client", "jid": "example.org", "password": "p"}]}`, `xmpp[0].jid: "example.org" is not an account JID`},
		{`{"xmpp": [{"type": "client", "jid": "r@example.org"}]}`, `xmpp[0].password: required (or password_file)`},
		{`{"xmpp": [{"type": "client", "jid": "r@example.org", "password": "p", "domain": "d"}]}`, `xmpp[0].domain: only for type component`},
		{`{"xmpp": [{"type": "client", "jid": "r@example.org", "password": "p", "tls": "none"}]}`, `xmpp[0].tls: "none" is not one of starttls, direct`},
		{`{"xmpp": [{"type": "client", "jid": "r@example.org", "password": "p", "ca_file": "/nonexistent/ca.pem"}]}`, `xmpp[0].ca_file`},
		{`{"xmpp": [{"type": "component", "server": "h:1", "domain": "d", "secret": "s", "policy": "roster"}]}`, `xmpp[0].policy: roster needs a client account`},
		{`{"xmpp": [{"type": "component", "server": "h:1", "domain": "d", "secret": "s", "policy": "friends"}]}`, `xmpp[0].policy: "friends" is not one of`},
		{`{"xmpp": [{"type": "component", "server": "h:1", "domain": "d", "secret": "s", "deny": ["a@b/res"]}]}`, `xmpp[0].deny[0]: "a@b/res" is not a bare JID or domain`},
		{`{"xmpp": [{"type": "component", "server": "h:1", "domain": "d", "secret": "s", "password": "p"}]}`, `xmpp[0].password: only for type client`},
		{`{"xmpp": [{"type": "component", "server": "nohost", "domain": "d", "secret": "s"}]}`, `xmpp[0].server: "nohost" is not host:port`},
		{`{"xmpp": [{"type": "component", "server": "h:99999", "domain": "d", "secret": "s"}]}`, `xmpp[0].server: port "99999"`},
		{`{"xmpp": [{"type": "component", "server": "h:1", "domain": "a@d", "secret": "s"}]}`, `xmpp[0].domain: "a@d" is not a bare domain`},
		{`{"xmpp": [{"type": "component", "server": "h:1", "domain": "d"}]}`, `xmpp[0].secret: required`},
		{`{"xmpp": [{"type": "component", "server": "h:1", "domain": "d", "secret": "s", "secret_file": "/x"}]}`, `not both`},
		{`{"xmpp": [{"type": "component", "server": "h:1", "domain": "d", "secret": "s"}, {"type": "component", "server": "h:2", "domain": "d", "secret": "s"}]}`, `xmpp[1].name: "d" is also the name of xmpp[0]`},
		{"{\n\"xmpp\": [,]}", "line 2: invalid JSON"},
		{``, "empty document"},
		{minimal + `{}`, "unexpected data after"},
	}
	for _, c := range cases {
		_, err := Parse(strings.NewReader(c.doc))
		if err == nil {
			t.Errorf("%s: accepted", c.doc)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got  %v\n want %q", c.doc, err, c.want)
		}
	}
}

func TestClientService(t *testing.T) {
	cfg, err := Parse(strings.NewReader(`{"xmpp": [{"type": "client", "jid": "relay@example.org", "password": "pw", "policy": "roster", "allow": ["example.org", "friend@example.net"], "deny": ["troll@example.org"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.XMPP[0]
	if s.Name != "relay@example.org" || s.Server != "" || s.Policy != "roster" {
		t.Fatalf("%+v", s)
	}
	if secret, err := s.ResolveSecret(cfg.Path); err != nil || secret != "pw" {
		t.Fatalf("password %q %v", secret, err)
	}
}

func TestAllProblemsReportedAtOnce(t *testing.T) {
	_, err := Parse(strings.NewReader(`{"ports": {"min": 1, "max": 2}, "log": {"format": "xml"}, "xmpp": [{"type": "bosh"}]}`))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, key := range []string{"ports.min", "log.format", "xmpp[0].type:"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not mention %s: %v", key, err)
		}
	}
}

func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "relayd.json")
	path := filepath.Join(dir, "secret")
	if err := os.WriteFile(path, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{path, "secret"} {
		doc := `{"xmpp": [{"type": "component", "server": "h:1", "domain": "d", "secret_file": "` + name + `"}]}`
		cfg, err := ParseAt(strings.NewReader(doc), cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		secret, err := cfg.XMPP[0].ResolveSecret(cfg.Path)
		if err != nil || secret != "from-file" {
			t.Fatalf("%s: secret %q, %v", name, secret, err)
		}
	}
	missing := `{"xmpp": [{"type": "component", "server": "h:1", "domain": "d", "secret_file": "` + path + `.none"}]}`
	if _, err := ParseAt(strings.NewReader(missing), cfgPath); err == nil || !strings.Contains(err.Error(), "xmpp[0].secret_file") {
		t.Fatalf("missing secret file: %v", err)
	}
	// A document that is not a file's has no directory to read from.
	doc := `{"xmpp": [{"type": "component", "server": "h:1", "domain": "d", "secret_file": "` + path + `"}]}`
	if _, err := Parse(strings.NewReader(doc)); err == nil || !strings.Contains(err.Error(), ErrNoConfigDir.Error()) {
		t.Fatalf("secret file without a configuration file: %v", err)
	}
}

func TestOversizeDocumentRejected(t *testing.T) {
	big := `{"log": {"level": "` + strings.Repeat("x", maxDocument) + `"}}`
	if _, err := Parse(strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversize document: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte(`{"ports": {"min": 40000, "max": 40003}, "xmpp": [{"type": "component", "server": "[::1]:5347", "domain": "r.x", "secret": "s"}]}`))
	f.Add([]byte(`{"xmpp": [{}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		// Whatever parses must satisfy the invariants the daemon relies on.
		// (No XMPP service is fine: a fresh device waits to be set up.)
		if cfg.Ports.Min < 1024 || cfg.Ports.Max > 65535 || cfg.Channel.ExpireSeconds < 1 || cfg.Channel.DrainSeconds < 0 ||
			cfg.Limits.MonthlyQuotaMB < 0 || cfg.Limits.PerJIDChannels < 0 {
			t.Fatalf("invalid config accepted: %+v", cfg)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted config fails validation: %v", err)
		}
	})
}

func TestPublicAddress6(t *testing.T) {
	cfg, err := Parse(strings.NewReader(`{"public_address": "203.0.113.10", "public_address6": "2001:db8::10", ` + minimal[1:]))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PublicAddress6 != "2001:db8::10" {
		t.Fatalf("public_address6 %q", cfg.PublicAddress6)
	}
}

// TestSocketsAutoFallsBackRatherThanRefuses: what steered refuses, auto
// (asked for or by default) accepts — an IPv6 listen address, the
// nftables fast path — because it keeps a socket per port there.
func TestSocketsAutoFallsBackRatherThanRefuses(t *testing.T) {
	for _, doc := range []string{
		`{"channel": {"sockets": "auto"}, "listen_address": "::", `,
		`{"channel": {"sockets": "auto", "fast_path": "nftables"}, `,
		`{"listen_address": "::", `,
		`{"channel": {"fast_path": "flowtable"}, `,
		`{"channel": {"sockets": "auto"}, "turn": {"builtin": {"enabled": true}}, `,
	} {
		cfg, err := Parse(strings.NewReader(doc + minimal[1:]))
		if err != nil {
			t.Errorf("%s: %v", doc, err)
			continue
		}
		if cfg.Channel.SocketsOrDefault() != SocketsAuto || cfg.Channel.Steered() {
			t.Errorf("%s: sockets %q, steered %v", doc, cfg.Channel.Sockets, cfg.Channel.Steered())
		}
	}
	var empty Channel
	if empty.SocketsOrDefault() != SocketsAuto {
		t.Errorf("the default is %q, want auto", empty.SocketsOrDefault())
	}
}
