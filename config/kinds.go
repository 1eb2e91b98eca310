package config

// The vocabularies of the document: each is a named string type whose
// constants are the values the JSON may hold (spelled as in the document),
// so code compares against a constant and never against a bare string.

// ServiceType is xmpp[].type: how the relay registers with an XMPP server.
type ServiceType string

const (
	// ServiceComponent is an XEP-0114 external component.
	ServiceComponent ServiceType = "component"
	// ServiceClient is an ordinary account, e.g. a donor's.
	ServiceClient ServiceType = "client"
)

// Policy is xmpp[].policy: who may request channels.
type Policy string

const (
	// PolicyDefault (empty) is PolicyPublic.
	PolicyDefault Policy = ""
	// PolicyPublic admits anyone (Allow and Deny still apply).
	PolicyPublic Policy = "public"
	// PolicyRoster admits only contacts with a presence subscription to
	// a client account.
	PolicyRoster Policy = "roster"
)

// TLSMode is xmpp[].tls: how a client service starts TLS.
type TLSMode string

const (
	// TLSDefault (empty) is TLSStartTLS.
	TLSDefault TLSMode = ""
	// TLSStartTLS upgrades the plain connection (the default).
	TLSStartTLS TLSMode = "starttls"
	// TLSDirect speaks TLS from the first byte (XEP-0368).
	TLSDirect TLSMode = "direct"
)

// FastPath is channel.fast_path: which in-kernel fast path latched legs
// are handed to.
type FastPath string

const (
	// FastPathDefault (empty) is FastPathAuto.
	FastPathDefault FastPath = ""
	// FastPathAuto uses eBPF, else the nftables flowtable, else the
	// stateless nftables rules, when the host allows it.
	FastPathAuto FastPath = "auto"
	// FastPathEBPF requires the eBPF fast path (relayd refuses to start
	// without it).
	FastPathEBPF FastPath = "ebpf"
	// FastPathNftables requires the nftables fast path (stateless rules).
	FastPathNftables FastPath = "nftables"
	// FastPathFlowtable requires the nftables flowtable: conntrack NAT
	// legs offloaded to a flowtable (software, or the SoC's hardware).
	FastPathFlowtable FastPath = "flowtable"
	// FastPathOff relays every datagram in user space.
	FastPathOff FastPath = "off"
)

// Sockets is channel.sockets: how relay ports are received.
type Sockets string

const (
	// SocketsDefault (empty) is SocketsAuto.
	SocketsDefault Sockets = ""
	// SocketsPerPort opens a socket per relay port.
	SocketsPerPort Sockets = "per_port"
	// SocketsSteered opens one socket per worker for the whole range,
	// through a BPF sk_lookup program.
	SocketsSteered Sockets = "steered"
	// SocketsAuto steers where relayd can and no better fast path is lost
	// by it, else opens a socket per port.
	SocketsAuto Sockets = "auto"
)

// Transport is turn.transport: how clients reach the TURN server.
type Transport string

const (
	TransportUDP Transport = "udp"
	TransportTCP Transport = "tcp"
)

// LogLevel is log.level.
type LogLevel string

const (
	LogDebug LogLevel = "debug"
	LogInfo  LogLevel = "info"
	LogWarn  LogLevel = "warn"
	LogError LogLevel = "error"
)

// LogFormat is log.format.
type LogFormat string

const (
	LogText LogFormat = "text"
	LogJSON LogFormat = "json"
)
