package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"mellium.im/xmpp/jid"
)

// Validate checks every key and returns all problems found, as an
// *Invalid naming each key. It changes nothing: defaults are filled by
// decoding (FillDefaults), so a configuration built in code should be
// filled before it is validated.
func (c Config) Validate() error {
	var p fieldErrors
	c.validateAddresses(&p)
	c.validateChannel(&p)
	c.validateLimits(&p)
	c.validateDiscovery(&p)
	c.validateDirectory(&p)
	c.validateExternal(&p)
	c.validateReachability(&p)
	c.validatePortMapping(&p)
	c.validateLogging(&p)
	c.validateServices(&p)
	return p.err()
}

func (c Config) validateAddresses(p *fieldErrors) {
	if c.PublicAddress != "" {
		a, err := netip.ParseAddr(c.PublicAddress)
		switch {
		case err != nil:
			p.addf("public_address", "not an IP address: %q", c.PublicAddress)
		case a.IsUnspecified() || a.IsMulticast():
			p.addf("public_address", "%s cannot be reached by peers", a)
		}
	}
	if c.PublicAddress6 != "" {
		a, err := netip.ParseAddr(c.PublicAddress6)
		switch {
		case err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "":
			p.addf("public_address6", "not an IPv6 address: %q", c.PublicAddress6)
		case a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalUnicast():
			p.addf("public_address6", "%s cannot be reached by peers", a)
		}
	}
	for i, s := range c.PublicAddressSTUN {
		if host, port, err := net.SplitHostPort(s); err != nil || host == "" || port == "" {
			p.addf(fmt.Sprintf("public_address_stun[%d]", i), "%q is not host:port", s)
		}
	}
	if a, err := netip.ParseAddr(c.ListenAddress); err != nil {
		p.addf("listen_address", "not an IP address: %q", c.ListenAddress)
	} else if a.IsMulticast() {
		p.addf("listen_address", "%s is a multicast address", a)
	}
	switch {
	case c.Ports.Min < 1024 || c.Ports.Min > 65535:
		p.addf("ports.min", "%d is outside 1024-65535", c.Ports.Min)
	case c.Ports.Max < 1024 || c.Ports.Max > 65535:
		p.addf("ports.max", "%d is outside 1024-65535", c.Ports.Max)
	case c.Ports.Max-(c.Ports.Min+c.Ports.Min%2)+1 < 4:
		p.addf("ports", "%d-%d holds no channel: a channel needs 4 consecutive ports starting at an even port", c.Ports.Min, c.Ports.Max)
	}
}

// maxUnixPath is the longest path a unix socket address holds (sun_path
// less its terminating NUL).
const maxUnixPath = 107

// validateChannel checks channel.* but for the donor-safety keys, which
// validateLimits checks with the limits.
func (c Config) validateChannel(p *fieldErrors) {
	ch := c.Channel
	if ch.ExpireSeconds < 1 || ch.ExpireSeconds > 3600 {
		p.addf("channel.expire_seconds", "%d is outside 1-3600", ch.ExpireSeconds)
	}
	if ch.LatchGraceSeconds < 0 || ch.LatchGraceSeconds > 600 {
		p.addf("channel.latch_grace_seconds", "%d is outside 0-600", ch.LatchGraceSeconds)
	}
	if ch.DrainSeconds < 0 || ch.DrainSeconds > 3600 {
		p.addf("channel.drain_seconds", "%d is outside 0-3600", ch.DrainSeconds)
	}
	switch ch.FastPath {
	case FastPathDefault, FastPathAuto, FastPathEBPF, FastPathNftables, FastPathFlowtable, FastPathOff:
	default:
		p.addf("channel.fast_path", "%q is not auto, ebpf, flowtable, nftables or off", ch.FastPath)
	}
	if s := ch.OffloadSocket; s != "" && (!strings.HasPrefix(s, "/") || len(s) > maxUnixPath) {
		p.addf("channel.offload_socket", "%q is not an absolute path of at most %d bytes", s, maxUnixPath)
	}
	switch ch.Sockets {
	case SocketsDefault, SocketsPerPort, SocketsAuto:
	case SocketsSteered:
		if a, err := netip.ParseAddr(c.ListenAddress); err == nil && !a.Unmap().Is4() {
			p.addf("channel.sockets", "steered needs an IPv4 listen_address, not %s", a)
		}
		if ch.FastPath == FastPathNftables || ch.FastPath == FastPathFlowtable {
			p.addf("channel.sockets", "steered cannot be combined with fast_path %s (it needs a socket per port)", ch.FastPath)
		}
	default:
		p.addf("channel.sockets", "%q is not per_port, steered or auto", ch.Sockets)
	}
}

// validateLimits checks limits.* and the channel's donor-safety keys.
func (c Config) validateLimits(p *fieldErrors) {
	l, ch := c.Limits, c.Channel
	for key, v := range map[string]int64{"limits.daily_quota_mb": l.DailyQuotaMB, "limits.monthly_quota_mb": l.MonthlyQuotaMB} {
		if v < 0 || v > 1_000_000_000 {
			p.addf(key, "%d is outside 0-1000000000 (0 = no quota)", v)
		}
	}
	if l.TotalKbps < 0 || l.TotalKbps > 10_000_000 {
		p.addf("limits.total_kbps", "%d is outside 0-10000000 (0 = no cap)", l.TotalKbps)
	}
	for key, v := range map[string]int{"limits.max_channels": l.MaxChannels, "limits.per_jid_channels": l.PerJIDChannels,
		"limits.per_jid_requests_per_minute": l.PerJIDRequestsPerMinute} {
		if v < 0 || v > 1_000_000 {
			p.addf(key, "%d is outside 0-1000000 (0 = no limit)", v)
		}
	}
	if v := l.MaxChannelsPerDomain; v < -1 || v > 1_000_000 {
		p.addf("limits.max_channels_per_domain", "%d is outside -1-1000000 (0 = a quarter of the relay's channels, -1 = no limit)", v)
	}
	if l.UsageSaveSeconds < 10 || l.UsageSaveSeconds > 86400 {
		p.addf("limits.usage_save_seconds", "%d is outside 10-86400", l.UsageSaveSeconds)
	}
	if ch.MaxPPS < 0 || ch.MaxPPS > 1_000_000 {
		p.addf("channel.max_pps", "%d is outside 0-1000000 (0 = 2000)", ch.MaxPPS)
	}
	if ch.SprayerChannels < -1 || ch.SprayerChannels > 100_000 {
		p.addf("channel.sprayer_channels", "%d is outside -1-100000 (0 = 16, -1 = off)", ch.SprayerChannels)
	}
	for i, a := range ch.AllowPeers {
		if _, err := netip.ParsePrefix(a); err != nil {
			p.addf(fmt.Sprintf("channel.allow_peers[%d]", i), "%q is not an address prefix such as 192.168.1.0/24", a)
		}
	}
	if ch.MaxKbps < 0 || ch.MaxKbps > 10_000_000 {
		p.addf("channel.max_kbps", "%d is outside 0-10000000 (0 = unlimited)", ch.MaxKbps)
	}
}

// validateDiscovery checks tracker.* and metrics.*.
func (c Config) validateDiscovery(p *fieldErrors) {
	if c.Tracker.RefreshSeconds < 1 || c.Tracker.RefreshSeconds > 86400 {
		p.addf("tracker.refresh_seconds", "%d is outside 1-86400", c.Tracker.RefreshSeconds)
	}
	for list, entries := range map[string][]string{"trackers": c.Tracker.Trackers, "discover_domains": c.Tracker.DiscoverDomains} {
		for j, e := range entries {
			if _, err := jid.Parse(e); err != nil || e == "" {
				p.addf(fmt.Sprintf("tracker.%s[%d]", list, j), "%q is not a JID", e)
			}
		}
	}
	if c.Metrics.Listen != "" {
		if _, port, err := net.SplitHostPort(c.Metrics.Listen); err != nil || port == "" {
			p.addf("metrics.listen", "%q is not host:port", c.Metrics.Listen)
		}
	}
}

// validateExternal checks the STUN server and the announced TURN server.
func (c Config) validateExternal(p *fieldErrors) {
	if c.STUN.MaxResponsesPerSecond < 0 || c.STUN.MaxResponsesPerSecond > 1_000_000 {
		p.addf("stun.max_responses_per_second", "%d is outside 0-1000000 (0 = no cap)", c.STUN.MaxResponsesPerSecond)
	}
	if c.STUN.Port < 1 || c.STUN.Port > 65535 {
		p.addf("stun.port", "%d is outside 1-65535", c.STUN.Port)
	} else if c.STUN.Enabled && c.STUN.Port >= c.Ports.Min && c.STUN.Port <= c.Ports.Max {
		p.addf("stun.port", "%d is inside the relay port range %d-%d", c.STUN.Port, c.Ports.Min, c.Ports.Max)
	}
	if c.TURN.Host != "" {
		if c.TURN.Port < 1 || c.TURN.Port > 65535 {
			p.addf("turn.port", "%d is outside 1-65535", c.TURN.Port)
		}
		if c.TURN.Transport != TransportUDP && c.TURN.Transport != TransportTCP {
			p.addf("turn.transport", "%q is not one of udp, tcp", c.TURN.Transport)
		}
		c.checkSecret(p, "turn", "secret", c.TURN.Secret, c.TURN.SecretFile)
		if c.TURN.TTLSeconds < 60 || c.TURN.TTLSeconds > 7*86400 {
			p.addf("turn.ttl_seconds", "%d is outside 60-604800", c.TURN.TTLSeconds)
		}
	}
	c.validateBuiltinTURN(p)
}

// validateLogging checks reconnect.* and log.*.
func (c Config) validateLogging(p *fieldErrors) {
	if c.Reconnect.MinSeconds <= 0 || c.Reconnect.MinSeconds > 3600 {
		p.addf("reconnect.min_seconds", "%g is outside (0, 3600]", c.Reconnect.MinSeconds)
	}
	if c.Reconnect.MaxSeconds < c.Reconnect.MinSeconds || c.Reconnect.MaxSeconds > 3600 {
		p.addf("reconnect.max_seconds", "%g must be between reconnect.min_seconds and 3600", c.Reconnect.MaxSeconds)
	}
	switch c.Log.Level {
	case LogDebug, LogInfo, LogWarn, LogError:
	default:
		p.addf("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case LogText, LogJSON:
	default:
		p.addf("log.format", "%q is not one of text, json", c.Log.Format)
	}
}

// validateServices checks xmpp[]: each entry by its type, and that no two
// share a name (DefaultName, for an entry without one).
func (c Config) validateServices(p *fieldErrors) {
	names := map[string]int{}
	for i, s := range c.XMPP {
		key := "xmpp[" + strconv.Itoa(i) + "]"
		name := s.DefaultName()
		if j, dup := names[name]; dup {
			p.addf(key+".name", "%q is also the name of xmpp[%d]", name, j)
		}
		names[name] = i
		if s.Server != "" || s.Type == ServiceComponent {
			if host, port, err := net.SplitHostPort(s.Server); err != nil || host == "" {
				p.addf(key+".server", "%q is not host:port", s.Server)
			} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				p.addf(key+".server", "port %q is not 1-65535", port)
			}
		}
		switch s.Type {
		case ServiceComponent:
			c.validateComponent(p, key, s)
		case ServiceClient:
			c.validateClient(p, key, s)
		default:
			p.addf(key+".type", "%q is not one of component, client", s.Type)
		}
		switch s.Policy {
		case PolicyDefault, PolicyPublic, PolicyRoster:
		default:
			p.addf(key+".policy", "%q is not one of public, roster", s.Policy)
		}
		for list, entries := range map[string][]string{"allow": s.Allow, "deny": s.Deny} {
			for j, e := range entries {
				if id, err := jid.Parse(e); err != nil || id.Resourcepart() != "" {
					p.addf(fmt.Sprintf("%s.%s[%d]", key, list, j), "%q is not a bare JID or domain", e)
				}
			}
		}
	}
}

func (c Config) validateComponent(p *fieldErrors, key string, s Service) {
	if err := checkDomain(s.Domain); err != nil {
		p.addf(key+".domain", "%v", err)
	}
	c.checkSecret(p, key, "secret", s.Secret, s.SecretFile)
	if s.Policy == PolicyRoster {
		p.addf(key+".policy", "roster needs a client account (a component has no roster)")
	}
	for _, k := range []struct{ name, val string }{{"jid", s.JID}, {"password", s.Password}, {"password_file", s.PasswordFile}, {"tls", string(s.TLS)}, {"ca_file", s.CAFile}} {
		if k.val != "" {
			p.addf(key+"."+k.name, "only for type client")
		}
	}
	if s.AllowPlain {
		p.addf(key+".allow_plain", "only for type client")
	}
}

func (c Config) validateClient(p *fieldErrors, key string, s Service) {
	if j, err := jid.Parse(s.JID); err != nil || j.Localpart() == "" {
		p.addf(key+".jid", "%q is not an account JID (user@domain)", s.JID)
	}
	c.checkSecret(p, key, "password", s.Password, s.PasswordFile)
	switch s.TLS {
	case TLSDefault, TLSStartTLS, TLSDirect:
	default:
		p.addf(key+".tls", "%q is not one of starttls, direct", s.TLS)
	}
	if s.CAFile != "" {
		if _, err := readCertPool(c.Path, s.CAFile); err != nil {
			p.addf(key+".ca_file", "%v", err)
		}
	}
	for _, k := range []struct{ name, val string }{{"domain", s.Domain}, {"secret", s.Secret}, {"secret_file", s.SecretFile}} {
		if k.val != "" {
			p.addf(key+"."+k.name, "only for type component")
		}
	}
}

// checkSecret requires exactly one of a secret and a file naming one, and
// the file to be readable under the rule of ReadFile and not empty.
func (c Config) checkSecret(p *fieldErrors, key, name, value, file string) {
	switch {
	case value == "" && file == "":
		p.addf(key+"."+name, "required (or %s_file)", name)
	case value != "" && file != "":
		p.addf(key+"."+name, "set %s or %s_file, not both", name, name)
	case file != "":
		if _, err := readSecret(c.Path, file); err != nil {
			p.addf(key+"."+name+"_file", "%v", err)
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
