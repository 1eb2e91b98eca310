package metrics

import (
	"runtime"
	"strings"

	"github.com/jnrelay/jnrelay/relayd/channel"
	"github.com/jnrelay/jnrelay/relayd/jinglenodes"
	"github.com/jnrelay/jnrelay/relayd/xmppsession"
)

// The fixed label value sets. A label value outside its set is never
// exported: unknown keys are summed into other (see fold).
var (
	directions = [...]string{channel.LocalToRemote.String(), channel.RemoteToLocal.String()}

	// Names of channel.DropReason, then kernel for channel.Stats.KernelDrops.
	dropReasons = append(channel.DropReasonNames(), "kernel")

	// Names of jinglenodes.Refusal: the XMPP error conditions a <channel/>
	// request is refused with, and domain_limit, a policy-violation for
	// the requester's domain's share (policy_violation is one requester's
	// limits).
	refusalReasons = refusalNames(func(jinglenodes.Refusal) bool { return true })

	// Periods of the usage counts and quotas.
	periods = [...]string{"day", "month"}

	// The refusals that are the relay's doing rather than the requester's:
	// no free ports, public address not known yet, ports could not be bound.
	// These are what an operator alerts on; forbidden and bad_request are
	// the requester's business.
	allocationFailureReasons = refusalNames(jinglenodes.Refusal.RelaysOwn)

	// Reasons a latched leg stays in userspace (channel.NotOffloaded*).
	notOffloadedReasons = channel.NotOffloadedReasons()

	// xmppsession.State values.
	sessionStates = stateNames(xmppsession.States())

	// Names of stun.DropReason, malformed ones first.
	stunDropReasons = [...]string{"not_stun", "truncated", "bad_length", "bad_cookie", "bad_attribute",
		"bad_fingerprint", "not_binding", "indication", "response", "unknown_attribute", "bad_source",
		"oversize", "send_error", "rate_limited", "source_rate_limited"}
)

// refusalNames are the names of the refusals that match, in counter order.
func refusalNames(match func(jinglenodes.Refusal) bool) []string {
	var out []string
	for _, r := range jinglenodes.Refusals() {
		if match(r) {
			out = append(out, r.String())
		}
	}
	return out
}

// other is the label value unknown keys are summed into.
const other = "other"

// collector writes the snapshots of Sources as metrics at scrape time. It
// keeps no state between scrapes, so concurrent scrapes need no locking
// and a counter can never drift from its source.
type collector struct {
	src     Sources
	version string

	buildInfo                        family
	channelsActive, channelsCapacity family
	packets, bytes, dropped          family
	relatched, segmented             family
	sprayersBlocked, sprayersTotal   family
	requests, allocationFailures     family
	sessionUp, sessionState          family
	connects                         family
	stunRequests, stunResponses      family
	stunDropped                      family
	fpActive, fpLegs, fpOffloads     family
	fpNotOffloaded, fpPackets        family
	donated, quota, quotaExhausted   family
	portMappings                     family
	callsServed                      family
	turn                             turnFamilies
	reachability                     reachabilityFamilies
}

func newCollector(src Sources, version string) *collector {
	gauge := func(name, help string, labels ...string) family {
		return family{name: name, help: help, typ: gaugeType, labels: labels}
	}
	counter := func(name, help string, labels ...string) family {
		return family{name: name, help: help, typ: counterType, labels: labels}
	}
	return &collector{
		src:     src,
		version: version,

		buildInfo: gauge("relayd_build_info", "Always 1; the labels say which relayd is running.", "goversion", "version"),

		channelsActive:   gauge("relayd_channels_active", "Channels now allocated."),
		channelsCapacity: gauge("relayd_channels_capacity", "Channels the configured port range can hold."),
		packets:          counter("relayd_relayed_packets_total", "Datagrams forwarded, by direction (local is the requester).", "direction"),
		bytes:            counter("relayd_relayed_bytes_total", "Payload bytes forwarded, by direction (local is the requester).", "direction"),
		dropped:          counter("relayd_dropped_packets_total", "Datagrams received on relay ports and not forwarded, by reason.", "reason"),
		relatched:        counter("relayd_relatched_total", "Port latches moved to a new source that carried the call."),
		sprayersBlocked:  gauge("relayd_sprayers_blocked", "Source addresses blocked now as port sprayers."),
		sprayersTotal:    counter("relayd_sprayers_blocked_total", "Source addresses blocked as port sprayers since start."),
		segmented:        counter("relayd_segmented_packets_total", "Relayed datagrams sent inside another's UDP segmentation offload (GSO) message: hot flows' batches, one send for many."),

		requests: counter("relayd_channel_requests_total",
			"Channel requests by outcome: granted, or the error condition they were refused with (domain_limit: policy-violation, the requester's domain holds its share).", "result"),
		allocationFailures: counter("relayd_allocation_failures_total",
			"Channel requests refused for the relay's own reasons (no ports, no public address, bind failed).", "reason"),

		sessionUp:    gauge("relayd_xmpp_session_up", "1 while the XMPP session is online, else 0.", "service"),
		sessionState: gauge("relayd_xmpp_session_state", "1 for the XMPP session's current state, else 0.", "service", "state"),
		connects:     counter("relayd_xmpp_session_connects_total", "Successful connections of the XMPP session.", "service"),

		stunRequests:  counter("relayd_stun_requests_total", "Datagrams read by the STUN server, well-formed or not."),
		stunResponses: counter("relayd_stun_responses_total", "Binding success responses sent by the STUN server."),
		stunDropped:   counter("relayd_stun_dropped_total", "Datagrams the STUN server did not answer, by reason.", "reason"),

		fpActive:   gauge("relayd_fastpath_active", "1 while the in-kernel fast path (nftables) is installed, else 0."),
		fpLegs:     gauge("relayd_fastpath_offloaded_legs", "Latched legs (RTP or RTCP port pairs) the kernel forwards now."),
		fpOffloads: counter("relayd_fastpath_offloads_total", "Legs handed to the kernel (installed, or updated after a re-latch)."),
		fpNotOffloaded: counter("relayd_fastpath_not_offloaded_total",
			"Latched legs kept in userspace, by reason (rate_limited, ipv6, conflict, kernel, route).", "reason"),
		fpPackets: counter("relayd_fastpath_packets_total",
			"Datagrams the kernel forwarded without userspace, by direction; included in relayd_relayed_packets_total.", "direction"),

		donated: gauge("relayd_donated_bytes",
			"Bytes relayed (both directions, channels and built-in TURN) in the current local day or month; kept across restarts, reset when the period turns.", "period"),
		quota:          gauge("relayd_quota_bytes", "The data quota of the period in bytes; 0 = none.", "period"),
		quotaExhausted: gauge("relayd_quota_exhausted", "1 while a data quota is used up and new channels are refused, else 0."),

		portMappings: gauge("relayd_port_mappings",
			"Ports the home router maps for relayd now, by the protocol that mapped them (pcp, nat-pmp, upnp); absent while port_mapping is off.", "protocol"),

		callsServed:  callsServedFamily(),
		turn:         newTURNFamilies(),
		reachability: newReachabilityFamilies(),
	}
}

// write reads each source once and writes its metrics, one family at a
// time.
func (c *collector) write(w *textWriter) {
	// Label values must be UTF-8 or a scraper rejects the whole scrape.
	w.uint(&c.buildInfo, 1, runtime.Version(), strings.ToValidUTF8(c.version, "\uFFFD"))

	if c.src.DataPlane != nil {
		dp := c.src.DataPlane()
		w.uint(&c.channelsActive, uint64(max(dp.ActiveChannels, 0)))
		w.uint(&c.channelsCapacity, uint64(max(dp.Capacity, 0)))
		w.uint(&c.packets, dp.PacketsLocalToRemote, directions[0])
		w.uint(&c.packets, dp.PacketsRemoteToLocal, directions[1])
		w.uint(&c.bytes, dp.BytesLocalToRemote, directions[0])
		w.uint(&c.bytes, dp.BytesRemoteToLocal, directions[1])
		byLabel(w, &c.dropped, dp.Dropped, dropReasons)
		w.uint(&c.relatched, dp.Relatched)
		w.uint(&c.segmented, dp.Segmented)
		w.uint(&c.sprayersBlocked, uint64(max(dp.SprayersBlocked, 0)))
		w.uint(&c.sprayersTotal, dp.SprayersBlockedTotal)
	}

	if c.src.Requests != nil {
		r := c.src.Requests()
		w.uint(&c.requests, r.Granted, "granted")
		byLabel(w, &c.requests, r.Refused, refusalReasons)
		for _, k := range allocationFailureReasons {
			w.uint(&c.allocationFailures, r.Refused[k], k)
		}
	}

	if c.src.Sessions != nil {
		c.writeSessions(w, c.src.Sessions())
	}

	if c.src.STUN != nil {
		st := c.src.STUN()
		w.uint(&c.stunRequests, st.Requests)
		w.uint(&c.stunResponses, st.Responses)
		byLabel(w, &c.stunDropped, st.Dropped, stunDropReasons[:])
	}

	if c.src.FastPath != nil {
		fp := c.src.FastPath()
		w.uint(&c.fpActive, boolValue(fp.Active))
		w.uint(&c.fpLegs, uint64(max(fp.OffloadedLegs, 0)))
		w.uint(&c.fpOffloads, fp.Offloads)
		byLabel(w, &c.fpNotOffloaded, fp.NotOffloaded, notOffloadedReasons)
		w.uint(&c.fpPackets, fp.PacketsLocalToRemote, directions[0])
		w.uint(&c.fpPackets, fp.PacketsRemoteToLocal, directions[1])
	}

	if c.src.Usage != nil {
		u := c.src.Usage()
		w.uint(&c.donated, u.DayBytes, periods[0])
		w.uint(&c.donated, u.MonthBytes, periods[1])
		w.uint(&c.quota, u.DailyQuotaBytes, periods[0])
		w.uint(&c.quota, u.MonthlyQuotaBytes, periods[1])
		w.uint(&c.quotaExhausted, boolValue(u.Exhausted))
	}

	if c.src.CallsServed != nil {
		writeCallsServed(w, &c.callsServed, c.src.CallsServed())
	}

	if c.src.TURN != nil {
		if t, ok := c.src.TURN(); ok {
			c.turn.write(w, t)
		}
	}

	if c.src.Reachability != nil {
		c.reachability.write(w, c.src.Reachability())
	}
	if c.src.PortMapping != nil {
		if pm, ok := c.src.PortMapping(); ok {
			for _, p := range PortMappingProtocols {
				n := 0
				if p == pm.Protocol {
					n = pm.Ports
				}
				w.uint(&c.portMappings, uint64(n), p)
			}
		}
	}
}

// writeSessions writes the session families, each family whole: the
// format wants a family's samples together, so the sessions are walked
// once per family.
func (c *collector) writeSessions(w *textWriter, all []Session) {
	// A repeated name is exported once (the first): two series with the
	// same labels would fail the scrape. Label values must be UTF-8;
	// config names are, but a bad one must not take the data plane's
	// metrics down with it.
	sessions := make([]Session, 0, len(all))
	seen := make(map[string]bool, len(all))
	for _, s := range all {
		s.Name = strings.ToValidUTF8(s.Name, "\uFFFD")
		if !seen[s.Name] {
			seen[s.Name] = true
			sessions = append(sessions, s)
		}
	}
	for _, s := range sessions {
		w.uint(&c.sessionUp, boolValue(s.State == string(xmppsession.StateOnline)), s.Name)
	}
	for _, s := range sessions {
		for _, st := range sessionStates {
			w.uint(&c.sessionState, boolValue(s.State == st), s.Name, st)
		}
	}
	for _, s := range sessions {
		w.uint(&c.connects, uint64(max(s.Connects, 0)), s.Name)
	}
}

// byLabel writes one sample of f per known key of m, and the sum of the
// other keys as reason="other" once it is non-zero.
func byLabel(w *textWriter, f *family, m map[string]uint64, known []string) {
	values, extra := fold(m, known)
	for i, k := range known {
		w.uint(f, values[i], k)
	}
	if extra > 0 {
		w.uint(f, extra, other)
	}
}

func boolValue(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// fold splits m into the values of the known keys, in order, and the sum
// of every other key, which is what keeps label values in a fixed set.
func fold(m map[string]uint64, known []string) (values []uint64, extra uint64) {
	values = make([]uint64, len(known))
next:
	for k, v := range m {
		for i, kk := range known {
			if k == kk {
				values[i] += v
				continue next
			}
		}
		extra += v
	}
	return values, extra
}

// stateNames spells session states as label values.
func stateNames(states []xmppsession.State) []string {
	out := make([]string, len(states))
	for i, st := range states {
		out[i] = string(st)
	}
	return out
}
