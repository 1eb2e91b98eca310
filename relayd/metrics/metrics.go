package metrics

import (
	"net/http"
	"strconv"
)

// Sources are the read-only snapshot functions a scrape reads. Each is
// called once per scrape, possibly from several scrapes at once, so each
// must be safe for concurrent use and cheap (it runs while Prometheus
// waits). A nil function leaves its metrics out, so a relay without a STUN
// server exports no relayd_stun_* series rather than zeros that look like
// an idle server.
type Sources struct {
	DataPlane func() DataPlane // the data plane's totals, live channels included
	Sessions  func() []Session // one entry per configured XMPP session
	STUN      func() STUNStats // nil when the STUN server is off
	Requests  func() Requests  // outcomes of <channel/> requests
	FastPath  func() FastPath  // the in-kernel fast path; nil leaves its series out
	Usage     func() Usage     // data donated and quotas; nil leaves its series out
	// CallsServed reports the calls served by channels and by the
	// built-in TURN server; nil leaves its series out. Unlike TURN's own
	// counters it is written whether or not TURN runs now: it must never
	// go back when TURN is turned off and on.
	CallsServed func() CallsServed
	// TURN reports the built-in TURN server's counters, and false while
	// it is not configured: its series are then left out, as a nil
	// function leaves them out (the server comes and goes with the
	// configuration, the function stays).
	TURN func() (TURN, bool)
	// Reachability is the last reachability check; nil leaves its series
	// out.
	Reachability func() Reachability
	// PortMapping reports the ports the router maps for relayd, and
	// false while port mapping is off (its series are then left out).
	PortMapping func() (PortMapping, bool)
}

// PortMapping is what the home router maps for relayd now.
type PortMapping struct {
	// Protocol is "pcp", "nat-pmp" or "upnp"; empty while nothing is
	// mapped.
	Protocol string
	Ports    int // ports mapped (STUN, TURN and relay ports)
}

// PortMappingProtocols are the protocol label's values.
var PortMappingProtocols = []string{"pcp", "nat-pmp", "upnp"}

// Usage is what the relay donated in the current day and month and its
// quotas (0 = none); Exhausted while new channels are refused for it.
type Usage struct {
	DayBytes, MonthBytes               uint64
	DailyQuotaBytes, MonthlyQuotaBytes uint64
	Exhausted                          bool
}

// FastPath is a snapshot of the in-kernel fast path (channel.FastPathStats).
type FastPath struct {
	Active        bool   // the nftables table is installed
	OffloadedLegs int    // legs the kernel forwards now
	Offloads      uint64 // legs installed or updated since start
	// NotOffloaded counts legs kept in userspace, by reason: rate_limited,
	// ipv6, conflict, kernel, route, packet_ceiling. Other keys are summed into
	// reason="other".
	NotOffloaded map[string]uint64
	// Packets forwarded by the kernel, by direction; already included in
	// DataPlane's packet counts.
	PacketsLocalToRemote, PacketsRemoteToLocal uint64
}

// DataPlane is a snapshot of the data plane. The counters are cumulative
// since start: they must count live channels as well as ended ones, or a
// long call would show no traffic until it ends.
type DataPlane struct {
	ActiveChannels int // channels now allocated
	Capacity       int // channels the port range can hold

	PacketsLocalToRemote, PacketsRemoteToLocal uint64 // datagrams forwarded
	BytesLocalToRemote, BytesRemoteToLocal     uint64 // payload bytes forwarded

	// Dropped counts datagrams not forwarded, by reason: peer_not_latched,
	// foreign_source, rate_limited, oversize, send_error,
	// foreign_source_kernel, no_channel, forbidden_peer, sprayer,
	// unconfirmed_peer, packet_ceiling, kernel (the
	// names of channel.DropReason, plus kernel for channel.Stats.KernelDrops).
	// Other keys are summed into reason="other".
	Dropped map[string]uint64

	Relatched uint64 // latches moved to a new source that carried the call
	Segmented uint64 // datagrams sent inside another's UDP GSO message

	SprayersBlocked      int    // source addresses blocked now as port sprayers
	SprayersBlockedTotal uint64 // since start
}

// Session is the status of one XMPP session.
type Session struct {
	// Name is the configured name of the session, exported as the service
	// label. Names must be unique; a repeated name is exported once (the
	// first), because two series with the same labels would fail the scrape.
	Name string
	// State is an xmppsession.State: connecting, online, backoff or
	// stopped. The session counts as up only when online.
	State string
	// Connects counts successful connections since start.
	Connects int
}

// STUNStats is a snapshot of the STUN server's counters (stun.Stats).
type STUNStats struct {
	Requests  uint64 // every datagram read, well-formed or not
	Responses uint64 // Binding success responses sent
	// Dropped counts unanswered datagrams by stun.DropReason name
	// (not_stun, bad_cookie, ...). Other keys are summed into
	// reason="other".
	Dropped map[string]uint64
}

// Requests counts the outcomes of <channel/> requests.
type Requests struct {
	Granted uint64 // channels allocated and answered
	// Refused counts refusals by the XMPP error condition answered, in
	// snake case: resource_constraint (no free ports), forbidden (policy),
	// bad_request, feature_not_implemented (tcp), service_unavailable
	// (public address unknown), internal (ports could not be bound).
	// Other keys are summed into result="other".
	Refused map[string]uint64
}

// Registry writes relayd's metrics, the Go runtime's go_* and the
// process' process_* metrics in the Prometheus text format.
type Registry struct {
	relayd  *collector
	runtime *goRuntime
	process *processMetrics
}

// NewRegistry returns a registry holding relayd's metrics read from src,
// relayd_build_info for version, and the Go runtime and process metrics.
// It holds no package-level state, so tests can build as many as they
// like.
func NewRegistry(src Sources, version string) *Registry {
	return &Registry{
		relayd:  newCollector(src, version),
		runtime: newGoRuntime(),
		process: newProcessMetrics(),
	}
}

// AppendText appends one scrape in the Prometheus text exposition format
// (version 0.0.4) to b. It is safe for concurrent use.
func (r *Registry) AppendText(b []byte) []byte {
	w := textWriter{buf: b}
	r.relayd.write(&w)
	r.runtime.write(&w)
	r.process.write(&w)
	return w.buf
}

// contentType is the text exposition format's, which every Prometheus
// server reads.
const contentType = "text/plain; version=0.0.4; charset=utf-8"

// maxScrapesInFlight bounds concurrent scrapes: a scrape builds the whole
// response in memory, and on a 64 MB router a scraper in a loop (or a
// hostile one on the LAN) must not pile them up; extra ones get 503.
const maxScrapesInFlight = 2

// Handler serves reg in the Prometheus text format.
func Handler(reg *Registry) http.Handler {
	// One buffer per scrape in flight: taking one is the in-flight
	// limit, and it is kept for the next scrape, so a scrape allocates
	// no response buffer once the buffers have grown.
	buffers := make(chan []byte, maxScrapesInFlight)
	for range maxScrapesInFlight {
		buffers <- nil
	}
	return http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		var buf []byte
		select {
		case buf = <-buffers:
		default:
			http.Error(rw, "too many concurrent scrapes", http.StatusServiceUnavailable)
			return
		}
		// Given back even if a source panics (net/http recovers), or the
		// slot would be lost for good.
		defer func() { buffers <- buf }()
		buf = reg.AppendText(buf[:0])
		rw.Header().Set("Content-Type", contentType)
		rw.Header().Set("Content-Length", strconv.Itoa(len(buf)))
		rw.Write(buf) // a scraper that went away is not an error here
	})
}
