// Package config defines relayd's configuration document: its schema
// (types.go, kinds.go), its defaults (defaults.go), its strict decoding
// (decode.go, strict.go), its validation (validate.go, errors.go) and the
// files it names (files.go, secrets.go). The document is JSON (the same
// document the provisioning API reads and writes); unknown keys are
// rejected so a typo never silently falls back to a default.
// docs/configuration.md is its reference.
package config

import (
	"net/netip"
	"time"
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
	// PublicAddress6 is the relay's public IPv6 address, the host of the
	// built-in TURN server's IPv6 relayed addresses. Empty = a public
	// IPv6 address of the interfaces (or public_address when it is IPv6).
	PublicAddress6 string `json:"public_address6,omitempty"`
	// ListenAddress is the local address relay ports bind to.
	ListenAddress string    `json:"listen_address,omitempty"`
	Ports         PortRange `json:"ports"`
	// PortMapping asks the home router to forward relayd's ports.
	PortMapping PortMapping `json:"port_mapping"`
	Channel     Channel     `json:"channel"`
	Limits      Limits      `json:"limits"`
	XMPP        []Service   `json:"xmpp"`
	Tracker     Tracker     `json:"tracker"`
	Directory   Directory   `json:"directory"`
	STUN        STUN        `json:"stun"`
	TURN        TURN        `json:"turn"`
	// Reachability configures the self-test of inbound reachability.
	Reachability Reachability `json:"reachability"`
	Metrics      Metrics      `json:"metrics"`
	Reconnect    Reconnect    `json:"reconnect"`
	Log          Log          `json:"log"`

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
	// FastPath hands latched legs to the kernel: "auto" (eBPF, else the
	// nftables flowtable, else the stateless nftables rules, when the host
	// allows it), "ebpf", "flowtable" or "nftables" (required: refuse to
	// start without it) or "off".
	FastPath FastPath `json:"fast_path,omitempty"`
	// OffloadSocket is the unix socket of the offload broker (relayd
	// -offload-broker), which holds the fast path's kernel objects and
	// capabilities so that relayd needs none; the fast path is opened
	// through it first, then by relayd itself. Empty = no broker. Needs
	// a restart to change.
	OffloadSocket string `json:"offload_socket,omitempty"`
	// Sockets is how relay ports are received: "per_port" (a socket per
	// port), "steered" (one socket per worker for the whole range,
	// through a BPF sk_lookup program) or "auto", the default (steered
	// where relayd can steer, else per_port); needs a restart to change.
	Sockets Sockets `json:"sockets,omitempty"`

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

// Steered reports whether the relay ports must be steered to a few
// sockets (auto may steer them too).
func (c Channel) Steered() bool { return c.Sockets == SocketsSteered }

// SocketsOrDefault is Sockets with the default spelled out.
func (c Channel) SocketsOrDefault() Sockets {
	if c.Sockets == SocketsDefault {
		return SocketsAuto
	}
	return c.Sockets
}

// Service is one XMPP service the relay registers with.
type Service struct {
	Name string `json:"name,omitempty"`
	// Type is "component" (XEP-0114 external component) or "client" (an
	// ordinary account, e.g. a donor's).
	Type ServiceType `json:"type"`
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
	TLS    TLSMode `json:"tls,omitempty"`
	CAFile string  `json:"ca_file,omitempty"`
	// AllowPlain lets the client log in with SASL PLAIN (the password
	// itself, inside the verified TLS) when the server offers no SCRAM.
	// Off by default: a server that offers only PLAIN is then refused, so
	// a server that is not the account's own never receives the password.
	AllowPlain bool `json:"allow_plain,omitempty"`

	// Policy says who may request channels: "public" (anyone, default) or
	// "roster" (client accounts only: contacts with a presence
	// subscription to the account). Allow and Deny list bare JIDs or
	// domains; Deny wins; a non-empty Allow admits only what it lists.
	Policy Policy   `json:"policy,omitempty"`
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

// TURN announces a TURN server through XEP-0215, with TURN REST
// credentials (username "<expiry>:<id>", password
// base64(HMAC-SHA1(secret, username))): either an external one (e.g.
// coturn with use-auth-secret, Host set) or relayd's own (Builtin).
type TURN struct {
	Host       string    `json:"host,omitempty"` // an external server; empty = none
	Port       int       `json:"port"`
	Transport  Transport `json:"transport"` // udp or tcp
	Secret     string    `json:"secret,omitempty"`
	SecretFile string    `json:"secret_file,omitempty"`
	TTLSeconds int       `json:"ttl_seconds"`
	// Builtin is relayd's own TURN server, relaying from the relay port
	// range. Its secret is Secret or SecretFile when set, else one relayd
	// generates and keeps in its state directory.
	Builtin BuiltinTURN `json:"builtin"`
}

// BuiltinTURN configures relayd's own TURN server.
type BuiltinTURN struct {
	Enabled bool `json:"enabled"`
	// Port is its UDP (and TCP) port. It cannot be the STUN server's:
	// that socket is the STUN server's own.
	Port  int    `json:"port"`
	TCP   bool   `json:"tcp"`   // also serve TURN over TCP on Port
	Realm string `json:"realm"` // the long-term credential realm
	// TLSPort serves TURN over TLS (turns:) on this TCP port, for
	// networks that let only TLS out; 0 = off (5349 is the usual port).
	TLSPort int `json:"tls_port"`
	// CertFile and KeyFile are the PEM certificate chain and private key
	// of the TLS listener, named under the rule for files (ReadFile).
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
	// TLSHost is the host announced in turns: entries: browsers check
	// the certificate against it, so it is the name the certificate is
	// for; empty = the relay's public address (a certificate for an IP).
	TLSHost string `json:"tls_host,omitempty"`
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
	Level  LogLevel  `json:"level"`  // debug, info, warn, error
	Format LogFormat `json:"format"` // text or json
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
