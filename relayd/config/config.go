// Package config defines relayd's configuration document, its defaults and
// its validation. The document is JSON (the same document the provisioning
// API will read and write); unknown keys are rejected so a typo never
// silently falls back to a default. docs/configuration.md is its reference.
package config

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"mellium.im/xmpp/jid"
)

// Config is the whole configuration of relayd.
type Config struct {
	// PublicAddress is the address put in channel results as host: the one
	// the world reaches the relay ports on. Empty = detect from interfaces.
	PublicAddress string `json:"public_address,omitempty"`
	// PublicAddressSTUN (host:port) are asked for the NAT's public address
	// when public_address is empty and the interfaces have only private
	// addresses.
	PublicAddressSTUN []string `json:"public_address_stun,omitempty"`
	// ListenAddress is the local address relay ports bind to.
	ListenAddress string    `json:"listen_address,omitempty"`
	Ports         PortRange `json:"ports"`
	Channel       Channel   `json:"channel"`
	Limits        Limits    `json:"limits"`
	XMPP          []Service `json:"xmpp"`
	Tracker       Tracker   `json:"tracker"`
	STUN          STUN      `json:"stun"`
	TURN          TURN      `json:"turn"`
	Metrics       Metrics   `json:"metrics"`
	Reconnect     Reconnect `json:"reconnect"`
	Log           Log       `json:"log"`

	// Path is the file the configuration was read from or is written to
	// (absolute; not part of the document). The files it names
	// (secret_file, password_file, ca_file) are read only from its
	// directory (see ReadFile); with no Path, naming one is an error.
	Path string `json:"-"`
}

// Limits protect the donor's connection. Over a limit new channel
// requests are refused (calls in progress go on) and the relay stops
// listing itself in <services/> until it has room again.
type Limits struct {
	// DailyQuotaMB and MonthlyQuotaMB cap the data relayed (both
	// directions) per local calendar day and month, in megabytes
	// (10^6 bytes); 0 = no quota.
	DailyQuotaMB   int64 `json:"daily_quota_mb"`
	MonthlyQuotaMB int64 `json:"monthly_quota_mb"`
	// TotalKbps caps the relay's bandwidth, every channel and both
	// directions together, in kilobits per second (0 = none).
	TotalKbps int `json:"total_kbps"`
	// MaxChannels caps live channels below what the port range holds
	// (0 = the port range is the limit).
	MaxChannels int `json:"max_channels"`
	// PerJIDChannels and PerJIDRequestsPerMinute bound one requester (a
	// bare JID): live channels, and channel requests per minute (burst of
	// the same size). 0 = no limit.
	PerJIDChannels          int `json:"per_jid_channels"`
	PerJIDRequestsPerMinute int `json:"per_jid_requests_per_minute"`
	// UsageSaveSeconds is how often, at most, the usage counts are
	// written to the state directory: flash wear against what a power cut
	// may forget.
	UsageSaveSeconds int `json:"usage_save_seconds"`

	// Per-domain share (donor safety). MaxChannelsPerDomain caps the live
	// channels all requesters of one domain hold together (anyone with a
	// server has as many JIDs as they like): 0 = a quarter of what the
	// relay carries (the port range's channels, or max_channels if
	// smaller), at least 1; -1 = no per-domain limit.
	MaxChannelsPerDomain int `json:"max_channels_per_domain"`
}

// DailyQuotaBytes is the daily quota in bytes (0 = none).
func (l Limits) DailyQuotaBytes() uint64 { return uint64(l.DailyQuotaMB) * 1e6 }

// MonthlyQuotaBytes is the monthly quota in bytes (0 = none).
func (l Limits) MonthlyQuotaBytes() uint64 { return uint64(l.MonthlyQuotaMB) * 1e6 }

// PortRange is the inclusive range relay ports are taken from.
type PortRange struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// Channel holds the per-channel relay settings.
type Channel struct {
	ExpireSeconds     int `json:"expire_seconds"`
	LatchGraceSeconds int `json:"latch_grace_seconds"`
	MaxKbps           int `json:"max_kbps"`
	// DrainSeconds is how long live calls may go on after SIGTERM (no
	// new channels are taken meanwhile) before relayd exits.
	DrainSeconds int `json:"drain_seconds"`
	// FastPath hands latched legs to the kernel: "auto" (eBPF, else
	// nftables, when the host allows it), "ebpf" or "nftables" (required:
	// refuse to start without it) or "off".
	FastPath string `json:"fast_path,omitempty"`
	// Sockets is how relay ports are received: "per_port" (a socket per
	// port, the default) or "steered" (one socket per worker for the whole
	// range, through a BPF sk_lookup program; needs a restart to change).
	Sockets string `json:"sockets,omitempty"`

	// Donor safety (docs/security.md).
	// MaxPPS is each relay port's packet-rate ceiling, datagrams a second
	// (0 = 2000): it stops a forwarding loop within half a second.
	MaxPPS int `json:"max_pps,omitempty"`
	// AllowPeers are address prefixes a relay port may latch whatever
	// their class: a private network that a relay with a public address
	// also serves. Unspecified, multicast and broadcast addresses and the
	// relay's own ports stay refused.
	AllowPeers []string `json:"allow_peers,omitempty"`
	// SprayerChannels is how many distinct channels one source address may
	// touch as a port sprayer does within 5 s before it is blocked for 10
	// minutes (0 = 16; -1 = detection off).
	SprayerChannels int `json:"sprayer_channels,omitempty"`
}

// AllowedPeers parses AllowPeers (validated by Validate).
func (c Channel) AllowedPeers() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(c.AllowPeers))
	for _, s := range c.AllowPeers {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// Steered reports whether the relay ports are steered to a few sockets.
func (c Channel) Steered() bool { return c.Sockets == "steered" }

// Service is one XMPP service the relay registers with.
type Service struct {
	Name string `json:"name,omitempty"`
	// Type is "component" (XEP-0114 external component) or "client" (an
	// ordinary account, e.g. a donor's).
	Type string `json:"type"`
	// Server is host:port to connect to: the component listener, or for
	// a client the c2s (or direct TLS) port; for a client it may be empty
	// (DNS SRV records of the JID's domain, then the domain on 5222).
	Server string `json:"server,omitempty"`

	// Component settings.
	Domain string `json:"domain,omitempty"` // the component's JID, e.g. relay.example.org
	// Secret is the component secret; SecretFile names a file holding it
	// (trailing newline ignored). Exactly one must be set.
	Secret     string `json:"secret,omitempty"`
	SecretFile string `json:"secret_file,omitempty"`

	// Client settings.
	JID          string `json:"jid,omitempty"` // account, e.g. relay@example.org (a resource is chosen by the server)
	Password     string `json:"password,omitempty"`
	PasswordFile string `json:"password_file,omitempty"`
	// TLS is "starttls" (default) or "direct" (TLS from the first byte,
	// XEP-0368). The server certificate is always verified, against the
	// system roots or CAFile.
	TLS    string `json:"tls,omitempty"`
	CAFile string `json:"ca_file,omitempty"`
	// AllowPlain lets the client log in with SASL PLAIN (the password
	// itself, inside the verified TLS) when the server offers no SCRAM.
	// Off by default: a server that offers only PLAIN is then refused, so
	// a server that is not the account's own never receives the password.
	AllowPlain bool `json:"allow_plain,omitempty"`

	// Policy says who may request channels: "public" (anyone, default) or
	// "roster" (client accounts only: contacts with a presence
	// subscription to the account). Allow and Deny list bare JIDs or
	// domains; Deny wins; a non-empty Allow admits only what it lists.
	Policy string   `json:"policy,omitempty"`
	Allow  []string `json:"allow,omitempty"`
	Deny   []string `json:"deny,omitempty"`
}

// Tracker configures relay discovery: other relays learned here are
// health-checked and listed in this relay's <services/>.
type Tracker struct {
	// Trackers are JIDs crawled for <services/> (their trackers too, up
	// to depth 3 and 20 nodes); they are also listed as trackers.
	Trackers []string `json:"trackers,omitempty"`
	// DiscoverDomains are XMPP domains whose disco#items are asked for
	// <services/> (where providers' relay components are listed).
	DiscoverDomains []string `json:"discover_domains,omitempty"`
	RefreshSeconds  int      `json:"refresh_seconds"`
}

// STUN configures the built-in STUN server (RFC 8489 Binding), listed in
// <services/> and in XEP-0215 answers.
type STUN struct {
	Enabled bool `json:"enabled"`
	Port    int  `json:"port"`
	// Classic also answers RFC 3489 requests (no magic cookie), as old
	// clients send them.
	Classic bool `json:"classic"`
	// MaxResponsesPerSecond caps the answers sent (a reflection attack
	// with forged sources must not use the donor's line); 0 = no cap.
	MaxResponsesPerSecond int `json:"max_responses_per_second"`
}

// TURN announces an external TURN server (e.g. coturn with
// use-auth-secret) through XEP-0215, with TURN REST credentials
// (username "<expiry>:<id>", password base64(HMAC-SHA1(secret, username))).
type TURN struct {
	Host       string `json:"host,omitempty"` // empty = no TURN service
	Port       int    `json:"port"`
	Transport  string `json:"transport"` // udp or tcp
	Secret     string `json:"secret,omitempty"`
	SecretFile string `json:"secret_file,omitempty"`
	TTLSeconds int    `json:"ttl_seconds"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Listen is host:port for an HTTP listener serving only /metrics;
	// empty = off. Bind it to a LAN or loopback address: metrics say how
	// busy the relay is, nothing more, but need not be public.
	Listen string `json:"listen,omitempty"`
}

// Refresh is the time between crawls.
func (t Tracker) Refresh() time.Duration { return time.Duration(t.RefreshSeconds) * time.Second }

// Reconnect bounds the exponential backoff between attempts to reach a lost
// XMPP server.
type Reconnect struct {
	MinSeconds float64 `json:"min_seconds"`
	MaxSeconds float64 `json:"max_seconds"`
}

// Log selects log verbosity and format.
type Log struct {
	Level  string `json:"level"`  // debug, info, warn, error
	Format string `json:"format"` // text or json
}

// Default returns the configuration every key falls back to.
func Default() Config {
	return Config{
		ListenAddress: "0.0.0.0",
		Ports:         PortRange{Min: 40000, Max: 40999},
		Channel:       Channel{ExpireSeconds: 60, LatchGraceSeconds: 5, DrainSeconds: 30, FastPath: "auto"},
		Limits:        Limits{PerJIDChannels: 16, PerJIDRequestsPerMinute: 120, UsageSaveSeconds: 300},
		Tracker:       Tracker{RefreshSeconds: 600},
		STUN:          STUN{Enabled: true, Port: 3478, Classic: true, MaxResponsesPerSecond: 200},
		TURN:          TURN{Port: 3478, Transport: "udp", TTLSeconds: 86400},
		Reconnect:     Reconnect{MinSeconds: 1, MaxSeconds: 60},
		Log:           Log{Level: "info", Format: "text"},
	}
}

// Load reads and validates the configuration file at path.
func Load(path string) (Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	f, err := os.Open(abs)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	cfg, err := ParseAt(f, abs)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// maxDocument bounds what Parse reads: a config is a few kilobytes.
const maxDocument = 1 << 20

// Parse decodes a configuration document over the defaults and validates
// it. The document is not from a file, so it may name no files (see
// ParseAt).
func Parse(r io.Reader) (Config, error) { return ParseAt(r, "") }

// ParseAt is Parse for the document of the configuration file at path
// (absolute): the files it names are read from path's directory.
func ParseAt(r io.Reader, path string) (Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxDocument+1))
	if err != nil {
		return Config{}, fmt.Errorf("read: %w", err)
	}
	if len(data) > maxDocument {
		return Config{}, fmt.Errorf("document larger than %d bytes", maxDocument)
	}
	cfg := Default()
	cfg.Path = path
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, describeJSONError(data, err)
	}
	if dec.More() {
		return Config{}, errors.New("unexpected data after the JSON document")
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// describeJSONError turns decoder errors into messages naming the key or
// the line, so an operator can find the mistake.
func describeJSONError(data []byte, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Errorf("line %d: invalid JSON: %v", lineOf(data, syn.Offset), err)
	case errors.As(err, &typ):
		return fmt.Errorf("%s: must be %s, got JSON %s", typ.Field, typ.Type, typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("unknown key %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	case errors.Is(err, io.EOF):
		return errors.New("empty document")
	}
	return fmt.Errorf("invalid JSON: %w", err)
}

func lineOf(data []byte, offset int64) int {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	return bytes.Count(data[:offset], []byte("\n")) + 1
}

// Validate checks every key and returns all problems found, each naming its
// key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.PublicAddress != "" {
		a, err := netip.ParseAddr(c.PublicAddress)
		switch {
		case err != nil:
			bad("public_address", "not an IP address: %q", c.PublicAddress)
		case a.IsUnspecified() || a.IsMulticast():
			bad("public_address", "%s cannot be reached by peers", a)
		}
	}
	for i, s := range c.PublicAddressSTUN {
		if host, port, err := net.SplitHostPort(s); err != nil || host == "" || port == "" {
			bad(fmt.Sprintf("public_address_stun[%d]", i), "%q is not host:port", s)
		}
	}
	if a, err := netip.ParseAddr(c.ListenAddress); err != nil {
		bad("listen_address", "not an IP address: %q", c.ListenAddress)
	} else if a.IsMulticast() {
		bad("listen_address", "%s is a multicast address", a)
	}
	switch {
	case c.Ports.Min < 1024 || c.Ports.Min > 65535:
		bad("ports.min", "%d is outside 1024-65535", c.Ports.Min)
	case c.Ports.Max < 1024 || c.Ports.Max > 65535:
		bad("ports.max", "%d is outside 1024-65535", c.Ports.Max)
	case c.Ports.Max-(c.Ports.Min+c.Ports.Min%2)+1 < 4:
		bad("ports", "%d-%d holds no channel: a channel needs 4 consecutive ports starting at an even port", c.Ports.Min, c.Ports.Max)
	}
	if c.Channel.ExpireSeconds < 1 || c.Channel.ExpireSeconds > 3600 {
		bad("channel.expire_seconds", "%d is outside 1-3600", c.Channel.ExpireSeconds)
	}
	if c.Channel.LatchGraceSeconds < 0 || c.Channel.LatchGraceSeconds > 600 {
		bad("channel.latch_grace_seconds", "%d is outside 0-600", c.Channel.LatchGraceSeconds)
	}
	if c.Channel.DrainSeconds < 0 || c.Channel.DrainSeconds > 3600 {
		bad("channel.drain_seconds", "%d is outside 0-3600", c.Channel.DrainSeconds)
	}
	switch c.Channel.FastPath {
	case "", "auto", "ebpf", "nftables", "off":
	default:
		bad("channel.fast_path", "%q is not auto, ebpf, nftables or off", c.Channel.FastPath)
	}
	switch c.Channel.Sockets {
	case "", "per_port":
	case "steered":
		if a, err := netip.ParseAddr(c.ListenAddress); err == nil && !a.Unmap().Is4() {
			bad("channel.sockets", "steered needs an IPv4 listen_address, not %s", a)
		}
		if c.Channel.FastPath == "nftables" {
			bad("channel.sockets", "steered cannot be combined with fast_path nftables (it needs a socket per port)")
		}
	default:
		bad("channel.sockets", "%q is not per_port or steered", c.Channel.Sockets)
	}
	for key, v := range map[string]int64{"limits.daily_quota_mb": c.Limits.DailyQuotaMB, "limits.monthly_quota_mb": c.Limits.MonthlyQuotaMB} {
		if v < 0 || v > 1_000_000_000 {
			bad(key, "%d is outside 0-1000000000 (0 = no quota)", v)
		}
	}
	if c.Limits.TotalKbps < 0 || c.Limits.TotalKbps > 10_000_000 {
		bad("limits.total_kbps", "%d is outside 0-10000000 (0 = no cap)", c.Limits.TotalKbps)
	}
	for key, v := range map[string]int{"limits.max_channels": c.Limits.MaxChannels, "limits.per_jid_channels": c.Limits.PerJIDChannels,
		"limits.per_jid_requests_per_minute": c.Limits.PerJIDRequestsPerMinute} {
		if v < 0 || v > 1_000_000 {
			bad(key, "%d is outside 0-1000000 (0 = no limit)", v)
		}
	}
	// Per-domain share (donor safety).
	if v := c.Limits.MaxChannelsPerDomain; v < -1 || v > 1_000_000 {
		bad("limits.max_channels_per_domain", "%d is outside -1-1000000 (0 = a quarter of the relay's channels, -1 = no limit)", v)
	}
	if c.Limits.UsageSaveSeconds < 10 || c.Limits.UsageSaveSeconds > 86400 {
		bad("limits.usage_save_seconds", "%d is outside 10-86400", c.Limits.UsageSaveSeconds)
	}
	if c.Channel.MaxPPS < 0 || c.Channel.MaxPPS > 1_000_000 {
		bad("channel.max_pps", "%d is outside 0-1000000 (0 = 2000)", c.Channel.MaxPPS)
	}
	if c.Channel.SprayerChannels < -1 || c.Channel.SprayerChannels > 100_000 {
		bad("channel.sprayer_channels", "%d is outside -1-100000 (0 = 16, -1 = off)", c.Channel.SprayerChannels)
	}
	for i, a := range c.Channel.AllowPeers {
		if _, err := netip.ParsePrefix(a); err != nil {
			bad(fmt.Sprintf("channel.allow_peers[%d]", i), "%q is not an address prefix such as 192.168.1.0/24", a)
		}
	}
	if c.Channel.MaxKbps < 0 || c.Channel.MaxKbps > 10_000_000 {
		bad("channel.max_kbps", "%d is outside 0-10000000 (0 = unlimited)", c.Channel.MaxKbps)
	}
	if c.Tracker.RefreshSeconds < 1 || c.Tracker.RefreshSeconds > 86400 {
		bad("tracker.refresh_seconds", "%d is outside 1-86400", c.Tracker.RefreshSeconds)
	}
	for list, entries := range map[string][]string{"trackers": c.Tracker.Trackers, "discover_domains": c.Tracker.DiscoverDomains} {
		for j, e := range entries {
			if _, err := jid.Parse(e); err != nil || e == "" {
				bad(fmt.Sprintf("tracker.%s[%d]", list, j), "%q is not a JID", e)
			}
		}
	}
	if c.Metrics.Listen != "" {
		if _, port, err := net.SplitHostPort(c.Metrics.Listen); err != nil || port == "" {
			bad("metrics.listen", "%q is not host:port", c.Metrics.Listen)
		}
	}
	if c.STUN.MaxResponsesPerSecond < 0 || c.STUN.MaxResponsesPerSecond > 1_000_000 {
		bad("stun.max_responses_per_second", "%d is outside 0-1000000 (0 = no cap)", c.STUN.MaxResponsesPerSecond)
	}
	if c.STUN.Port < 1 || c.STUN.Port > 65535 {
		bad("stun.port", "%d is outside 1-65535", c.STUN.Port)
	} else if c.STUN.Enabled && c.STUN.Port >= c.Ports.Min && c.STUN.Port <= c.Ports.Max {
		bad("stun.port", "%d is inside the relay port range %d-%d", c.STUN.Port, c.Ports.Min, c.Ports.Max)
	}
	if c.TURN.Host != "" {
		if c.TURN.Port < 1 || c.TURN.Port > 65535 {
			bad("turn.port", "%d is outside 1-65535", c.TURN.Port)
		}
		if c.TURN.Transport != "udp" && c.TURN.Transport != "tcp" {
			bad("turn.transport", "%q is not one of udp, tcp", c.TURN.Transport)
		}
		c.checkSecret(bad, "turn", "secret", c.TURN.Secret, c.TURN.SecretFile)
		if c.TURN.TTLSeconds < 60 || c.TURN.TTLSeconds > 7*86400 {
			bad("turn.ttl_seconds", "%d is outside 60-604800", c.TURN.TTLSeconds)
		}
	}
	if c.Reconnect.MinSeconds <= 0 || c.Reconnect.MinSeconds > 3600 {
		bad("reconnect.min_seconds", "%g is outside (0, 3600]", c.Reconnect.MinSeconds)
	}
	if c.Reconnect.MaxSeconds < c.Reconnect.MinSeconds || c.Reconnect.MaxSeconds > 3600 {
		bad("reconnect.max_seconds", "%g must be between reconnect.min_seconds and 3600", c.Reconnect.MaxSeconds)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	names := map[string]int{}
	for i := range c.XMPP {
		s := &c.XMPP[i]
		key := "xmpp[" + strconv.Itoa(i) + "]"
		if s.Name == "" {
			s.Name = s.Domain
			if s.Type == "client" {
				s.Name = s.JID
			}
		}
		if j, dup := names[s.Name]; dup {
			bad(key+".name", "%q is also the name of xmpp[%d]", s.Name, j)
		}
		names[s.Name] = i
		if s.Server != "" || s.Type == "component" {
			if host, port, err := net.SplitHostPort(s.Server); err != nil || host == "" {
				bad(key+".server", "%q is not host:port", s.Server)
			} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
				bad(key+".server", "port %q is not 1-65535", port)
			}
		}
		switch s.Type {
		case "component":
			if err := checkDomain(s.Domain); err != nil {
				bad(key+".domain", "%v", err)
			}
			c.checkSecret(bad, key, "secret", s.Secret, s.SecretFile)
			if s.Policy == "roster" {
				bad(key+".policy", "roster needs a client account (a component has no roster)")
			}
			for _, k := range []struct{ name, val string }{{"jid", s.JID}, {"password", s.Password}, {"password_file", s.PasswordFile}, {"tls", s.TLS}, {"ca_file", s.CAFile}} {
				if k.val != "" {
					bad(key+"."+k.name, "only for type client")
				}
			}
			if s.AllowPlain {
				bad(key+".allow_plain", "only for type client")
			}
		case "client":
			if j, err := jid.Parse(s.JID); err != nil || j.Localpart() == "" {
				bad(key+".jid", "%q is not an account JID (user@domain)", s.JID)
			}
			c.checkSecret(bad, key, "password", s.Password, s.PasswordFile)
			switch s.TLS {
			case "", "starttls", "direct":
			default:
				bad(key+".tls", "%q is not one of starttls, direct", s.TLS)
			}
			if s.CAFile != "" {
				if _, err := readCertPool(c.Path, s.CAFile); err != nil {
					bad(key+".ca_file", "%v", err)
				}
			}
			for _, k := range []struct{ name, val string }{{"domain", s.Domain}, {"secret", s.Secret}, {"secret_file", s.SecretFile}} {
				if k.val != "" {
					bad(key+"."+k.name, "only for type component")
				}
			}
		default:
			bad(key+".type", "%q is not one of component, client", s.Type)
		}
		switch s.Policy {
		case "", "public", "roster":
		default:
			bad(key+".policy", "%q is not one of public, roster", s.Policy)
		}
		for list, entries := range map[string][]string{"allow": s.Allow, "deny": s.Deny} {
			for j, e := range entries {
				if p, err := jid.Parse(e); err != nil || p.Resourcepart() != "" {
					bad(fmt.Sprintf("%s.%s[%d]", key, list, j), "%q is not a bare JID or domain", e)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// checkSecret requires exactly one of a secret and a file naming one, and
// the file to be readable under the rule of ReadFile and not empty.
func (c *Config) checkSecret(bad func(key, format string, args ...any), key, name, value, file string) {
	switch {
	case value == "" && file == "":
		bad(key+"."+name, "required (or %s_file)", name)
	case value != "" && file != "":
		bad(key+"."+name, "set %s or %s_file, not both", name, name)
	case file != "":
		if _, err := readSecret(c.Path, file); err != nil {
			bad(key+"."+name+"_file", "%v", err)
		}
	}
}

// checkDomain accepts a DNS-style component domain (no localpart, no
// resource).
func checkDomain(d string) error {
	if d == "" {
		return errors.New("required")
	}
	if len(d) > 1023 {
		return errors.New("longer than 1023 bytes")
	}
	if strings.ContainsAny(d, "@/ \t\r\n\"'<>&") {
		return fmt.Errorf("%q is not a bare domain", d)
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%q has an empty or over-long label", d)
		}
	}
	return nil
}

// ResolveSecret returns the service's credential: the component secret or
// the account password, read from its file when one is set (configPath is
// the configuration's Path: see ReadFile).
func (s Service) ResolveSecret(configPath string) (string, error) {
	value, file, name := s.Secret, s.SecretFile, "secret_file"
	if s.Type == "client" {
		value, file, name = s.Password, s.PasswordFile, "password_file"
	}
	if file == "" {
		return value, nil
	}
	secret, err := readSecret(configPath, file)
	if err != nil {
		return "", fmt.Errorf("xmpp service %s: %s: %w", s.Name, name, err)
	}
	return secret, nil
}

// ResolveCA returns the certificates of the service's ca_file, or nil
// (the system roots) when it has none.
func (s Service) ResolveCA(configPath string) (*x509.CertPool, error) {
	if s.CAFile == "" {
		return nil, nil
	}
	pool, err := readCertPool(configPath, s.CAFile)
	if err != nil {
		return nil, fmt.Errorf("xmpp service %s: ca_file: %w", s.Name, err)
	}
	return pool, nil
}

// ResolveSecret returns the TURN shared secret, read from its file when set.
func (t TURN) ResolveSecret(configPath string) (string, error) {
	if t.SecretFile == "" {
		return t.Secret, nil
	}
	secret, err := readSecret(configPath, t.SecretFile)
	if err != nil {
		return "", fmt.Errorf("turn.secret_file: %w", err)
	}
	return secret, nil
}

// Expire is the channel inactivity timeout.
func (c Channel) Expire() time.Duration { return time.Duration(c.ExpireSeconds) * time.Second }

// Drain is how long live calls may go on after SIGTERM.
func (c Channel) Drain() time.Duration { return time.Duration(c.DrainSeconds) * time.Second }

// LatchGrace is the silence after which a latch may move to a new source.
func (c Channel) LatchGrace() time.Duration {
	return time.Duration(c.LatchGraceSeconds) * time.Second
}

// Min is the first reconnect delay.
func (r Reconnect) Min() time.Duration { return seconds(r.MinSeconds) }

// Max caps the reconnect delay.
func (r Reconnect) Max() time.Duration { return seconds(r.MaxSeconds) }

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
