package metrics

import (
	"runtime"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

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

// collector turns the snapshots of Sources into constant metrics at scrape
// time. It keeps no state between scrapes, so concurrent scrapes need no
// locking and a counter can never drift from its source.
type collector struct {
	src     Sources
	version string

	buildInfo                         *prometheus.Desc
	channelsActive, channelsCapacity  *prometheus.Desc
	packets, bytes, dropped           *prometheus.Desc
	relatched, segmented              *prometheus.Desc
	sprayersBlocked, sprayersTotal    *prometheus.Desc
	requests, allocationFailures      *prometheus.Desc
	sessionUp, sessionState, connects *prometheus.Desc
	stunRequests, stunResponses       *prometheus.Desc
	stunDropped                       *prometheus.Desc
	fpActive, fpLegs, fpOffloads      *prometheus.Desc
	fpNotOffloaded, fpPackets         *prometheus.Desc
	donated, quota, quotaExhausted    *prometheus.Desc
}

func newCollector(src Sources, version string) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &collector{
		src:     src,
		version: version,

		buildInfo: d("relayd_build_info", "Always 1; the labels say which relayd is running.", "version", "goversion"),

		channelsActive:   d("relayd_channels_active", "Channels now allocated."),
		channelsCapacity: d("relayd_channels_capacity", "Channels the configured port range can hold."),
		packets:          d("relayd_relayed_packets_total", "Datagrams forwarded, by direction (local is the requester).", "direction"),
		bytes:            d("relayd_relayed_bytes_total", "Payload bytes forwarded, by direction (local is the requester).", "direction"),
		dropped:          d("relayd_dropped_packets_total", "Datagrams received on relay ports and not forwarded, by reason.", "reason"),
		relatched:        d("relayd_relatched_total", "Port latches moved to a new source that carried the call."),
		sprayersBlocked:  d("relayd_sprayers_blocked", "Source addresses blocked now as port sprayers."),
		sprayersTotal:    d("relayd_sprayers_blocked_total", "Source addresses blocked as port sprayers since start."),
		segmented:        d("relayd_segmented_packets_total", "Relayed datagrams sent inside another's UDP segmentation offload (GSO) message: hot flows' batches, one send for many."),

		requests: d("relayd_channel_requests_total",
			"Channel requests by outcome: granted, or the error condition they were refused with (domain_limit: policy-violation, the requester's domain holds its share).", "result"),
		allocationFailures: d("relayd_allocation_failures_total",
			"Channel requests refused for the relay's own reasons (no ports, no public address, bind failed).", "reason"),

		sessionUp:    d("relayd_xmpp_session_up", "1 while the XMPP session is online, else 0.", "service"),
		sessionState: d("relayd_xmpp_session_state", "1 for the XMPP session's current state, else 0.", "service", "state"),
		connects:     d("relayd_xmpp_session_connects_total", "Successful connections of the XMPP session.", "service"),

		stunRequests:  d("relayd_stun_requests_total", "Datagrams read by the STUN server, well-formed or not."),
		stunResponses: d("relayd_stun_responses_total", "Binding success responses sent by the STUN server."),
		stunDropped:   d("relayd_stun_dropped_total", "Datagrams the STUN server did not answer, by reason.", "reason"),

		fpActive:   d("relayd_fastpath_active", "1 while the in-kernel fast path (nftables) is installed, else 0."),
		fpLegs:     d("relayd_fastpath_offloaded_legs", "Latched legs (RTP or RTCP port pairs) the kernel forwards now."),
		fpOffloads: d("relayd_fastpath_offloads_total", "Legs handed to the kernel (installed, or updated after a re-latch)."),
		fpNotOffloaded: d("relayd_fastpath_not_offloaded_total",
			"Latched legs kept in userspace, by reason (rate_limited, ipv6, conflict, kernel, route).", "reason"),
		fpPackets: d("relayd_fastpath_packets_total",
			"Datagrams the kernel forwarded without userspace, by direction; included in relayd_relayed_packets_total.", "direction"),

		donated: d("relayd_donated_bytes",
			"Bytes relayed (both directions) in the current local day or month; kept across restarts, reset when the period turns.", "period"),
		quota:          d("relayd_quota_bytes", "The data quota of the period in bytes; 0 = none.", "period"),
		quotaExhausted: d("relayd_quota_exhausted", "1 while a data quota is used up and new channels are refused, else 0."),
	}
}

// Describe sends every descriptor, including those of sources that are
// nil, so the registry checks every name and label set up front.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.buildInfo, c.channelsActive, c.channelsCapacity, c.packets, c.bytes, c.dropped, c.relatched, c.segmented,
		c.sprayersBlocked, c.sprayersTotal,
		c.requests, c.allocationFailures, c.sessionUp, c.sessionState, c.connects,
		c.stunRequests, c.stunResponses, c.stunDropped,
		c.fpActive, c.fpLegs, c.fpOffloads, c.fpNotOffloaded, c.fpPackets,
		c.donated, c.quota, c.quotaExhausted,
	} {
		ch <- d
	}
}

// Collect reads each source once and sends its metrics.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	// The label values here are ours or bounded by the descriptors, so
	// MustNewConstMetric cannot fail; a failure would be a bug in this
	// file, caught by the tests.
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	byLabel := func(d *prometheus.Desc, m map[string]uint64, known []string) {
		values, extra := fold(m, known)
		for i, k := range known {
			counter(d, values[i], k)
		}
		if extra > 0 {
			counter(d, extra, other)
		}
	}

	gauge(c.buildInfo, 1, strings.ToValidUTF8(c.version, "\uFFFD"), runtime.Version())

	if c.src.DataPlane != nil {
		dp := c.src.DataPlane()
		gauge(c.channelsActive, float64(dp.ActiveChannels))
		gauge(c.channelsCapacity, float64(dp.Capacity))
		counter(c.packets, dp.PacketsLocalToRemote, directions[0])
		counter(c.packets, dp.PacketsRemoteToLocal, directions[1])
		counter(c.bytes, dp.BytesLocalToRemote, directions[0])
		counter(c.bytes, dp.BytesRemoteToLocal, directions[1])
		byLabel(c.dropped, dp.Dropped, dropReasons[:])
		counter(c.relatched, dp.Relatched)
		counter(c.segmented, dp.Segmented)
		gauge(c.sprayersBlocked, float64(dp.SprayersBlocked))
		counter(c.sprayersTotal, dp.SprayersBlockedTotal)
	}

	if c.src.Requests != nil {
		r := c.src.Requests()
		counter(c.requests, r.Granted, "granted")
		byLabel(c.requests, r.Refused, refusalReasons)
		for _, k := range allocationFailureReasons {
			counter(c.allocationFailures, r.Refused[k], k)
		}
	}

	if c.src.Sessions != nil {
		seen := map[string]bool{}
		for _, s := range c.src.Sessions() {
			// Label values must be UTF-8 or the whole registry fails the
			// scrape; config names are, but a bad one must not take the
			// data plane's metrics down with it.
			name := strings.ToValidUTF8(s.Name, "\uFFFD")
			if seen[name] {
				continue
			}
			seen[name] = true
			up := 0.0
			if s.State == string(xmppsession.StateOnline) {
				up = 1
			}
			gauge(c.sessionUp, up, name)
			for _, st := range sessionStates {
				v := 0.0
				if s.State == st {
					v = 1
				}
				gauge(c.sessionState, v, name, st)
			}
			counter(c.connects, uint64(max(s.Connects, 0)), name)
		}
	}

	if c.src.STUN != nil {
		st := c.src.STUN()
		counter(c.stunRequests, st.Requests)
		counter(c.stunResponses, st.Responses)
		byLabel(c.stunDropped, st.Dropped, stunDropReasons[:])
	}

	if c.src.FastPath != nil {
		fp := c.src.FastPath()
		active := 0.0
		if fp.Active {
			active = 1
		}
		gauge(c.fpActive, active)
		gauge(c.fpLegs, float64(fp.OffloadedLegs))
		counter(c.fpOffloads, fp.Offloads)
		byLabel(c.fpNotOffloaded, fp.NotOffloaded, notOffloadedReasons[:])
		counter(c.fpPackets, fp.PacketsLocalToRemote, directions[0])
		counter(c.fpPackets, fp.PacketsRemoteToLocal, directions[1])
	}

	c.collectUsage(ch)
}

func (c *collector) collectUsage(ch chan<- prometheus.Metric) {
	if c.src.Usage == nil {
		return
	}
	u := c.src.Usage()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(c.donated, float64(u.DayBytes), periods[0])
	gauge(c.donated, float64(u.MonthBytes), periods[1])
	gauge(c.quota, float64(u.DailyQuotaBytes), periods[0])
	gauge(c.quota, float64(u.MonthlyQuotaBytes), periods[1])
	exhausted := 0.0
	if u.Exhausted {
		exhausted = 1
	}
	gauge(c.quotaExhausted, exhausted)
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
