// Package metrics exposes relayd to Prometheus: a registry that holds
// relayd's own metrics plus the Go runtime and process metrics, and the HTTP
// handler that serves it as /metrics.
//
// # Written by hand
//
// The registry writes the Prometheus text exposition format (version 0.0.4)
// itself, into a buffer each scrape reuses, rather than through
// client_golang: that library's registry builds a protobuf message per
// metric for every scrape and brings the protobuf runtime with it, about
// 1.9 MB of a 32-bit ARM binary that has to fit in router flash
// (docs/size.md). The format is small: a family's HELP and TYPE lines, then
// its samples together, label values and HELP escaped. The tests parse what
// it writes with Prometheus' own text parser.
//
// # No cost on the data path
//
// Nothing here is touched per packet. The data plane, the STUN server and
// the XMPP sessions already keep their own atomic counters; this package
// reads them only when Prometheus scrapes, through the read-only snapshot
// functions in Sources, and writes each snapshot out as it reads it. So a
// relay nobody scrapes pays nothing, and every counter is as live as the
// snapshot it comes from (the data plane's Totals include live channels,
// not only ended ones).
//
// No relayd type crosses its boundary: Sources returns plain structs, so
// the data plane and the control plane stay free of Prometheus, and
// main.go does the translation. Only the label vocabularies are taken from
// the packages that define them — the data plane's reasons and directions
// (relayd/channel), the refusals (relayd/jinglenodes), the session states
// (relayd/xmppsession), the TURN refusals (relayd/turn) — so each is
// listed once.
//
// # Bounded cardinality
//
// Labels never carry a channel id, a JID or an address. The reason,
// direction, result and state labels take values from fixed sets listed
// below; a key a source reports that is not in its set is added to
// reason="other" rather than becoming a new series, so a new drop reason
// added to the data plane before it is added here costs one series, not an
// unbounded number. The service label is the configured session name, so
// it is bounded by the configuration.
//
// # Metrics
//
//	relayd_build_info{version,goversion}              gauge    always 1
//	relayd_channels_active                            gauge    live channels
//	relayd_channels_capacity                          gauge    channels the port range holds
//	relayd_relayed_packets_total{direction}           counter  datagrams forwarded
//	relayd_relayed_bytes_total{direction}             counter  payload bytes forwarded
//	relayd_dropped_packets_total{reason}              counter  datagrams not forwarded
//	relayd_relatched_total                            counter  latches moved to a new source
//	relayd_channel_requests_total{result}             counter  channel requests by outcome
//	relayd_allocation_failures_total{reason}          counter  requests refused for the relay's own reasons
//	relayd_xmpp_session_up{service}                   gauge    1 while the session is online
//	relayd_xmpp_session_state{service,state}          gauge    1 for the session's current state
//	relayd_xmpp_session_connects_total{service}       counter  successful connections
//	relayd_stun_requests_total                        counter  datagrams read by the STUN server
//	relayd_stun_responses_total                       counter  Binding success responses sent
//	relayd_stun_dropped_total{reason}                 counter  datagrams not answered
//	relayd_turn_allocations                           gauge    TURN allocations open now
//	relayd_turn_allocations_total                     counter  TURN allocations opened
//	relayd_turn_refusals_total{reason}                counter  TURN refusals
//	relayd_turn_relayed_bytes_total{direction}        counter  payload bytes TURN relayed
//	relayd_calls_served_total{kind}                   counter  channels and TURN allocations that relayed each way
//
// plus the standard go_* metrics (read from runtime/metrics, which does not
// stop the world as runtime.ReadMemStats does: go_goroutines, go_threads,
// go_info, go_gc_gogc_percent, go_gc_gomemlimit_bytes,
// go_gc_duration_seconds, go_sched_gomaxprocs_threads and the
// go_memstats_* family with MemStats' meanings) and process_* metrics read
// from /proc/self (process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_virtual_memory_max_bytes,
// process_start_time_seconds, and process_open_fds against process_max_fds:
// a channel holds four descriptors, so that is the other capacity limit of
// a relay). A process value that cannot be read is left out of the scrape.
//
// Label values:
//
//	direction  local_to_remote, remote_to_local
//	reason     (dropped packets) peer_not_latched, foreign_source,
//	           rate_limited, oversize, send_error, foreign_source_kernel,
//	           no_channel (steered ports: a port no channel holds),
//	           forbidden_peer (a source the peer rule refuses: the relay
//	           itself, loopback, private at a public relay, ...),
//	           sprayer (from or toward a blocked port sprayer),
//	           unconfirmed_peer (toward a side past its probe budget),
//	           packet_ceiling (over a port's packet-rate ceiling), kernel,
//	           other
//	result     granted, resource_constraint, forbidden, bad_request,
//	           feature_not_implemented, service_unavailable, internal, other
//	reason     (allocation failures) resource_constraint, service_unavailable,
//	           internal: the refusals that are the relay's doing (ports
//	           exhausted, public address unknown, ports could not be
//	           bound), as opposed to a refused or malformed request
//	state      connecting, online, backoff, stopped
//	reason     (STUN) not_stun, truncated, bad_length, bad_cookie,
//	           bad_attribute, bad_fingerprint (the malformed ones),
//	           not_binding, indication, response, unknown_attribute,
//	           bad_source, oversize, send_error, other
//	reason     (TURN) turn.RefusalReasons: auth, admission, pool, peer,
//	           rate_limit, no_address, addr_family, tls_source,
//	           amplification, other
//	kind       (calls served) channel, turn
//
// The relayd_turn_* series are written only while the built-in TURN
// server runs (Sources.TURN reports false otherwise), for the reason a
// nil source leaves its series out: zeros would look like an idle server.
// relayd_calls_served_total is not one of them: its kind="turn" is written
// with or without the server, and counts what stopped servers served too,
// so a live reconfiguration never moves it back.
//
// Known reasons are exported at zero before anything happened, so that
// rate() and increase() see the first event and alert rules need no
// absent() guards. reason="other" appears only once it is non-zero.
//
// Kernel drops (reason="kernel") are the datagrams the kernel discarded
// because a relay port's receive buffer was full; the data plane learns them
// when a channel ends, so that series moves in steps. foreign_source_kernel
// are foreign-source datagrams dropped by a flooded port's in-kernel source
// filter, credited every quarter second.
//
// Example alert rules and a Grafana dashboard that use these names are in
// docs/monitoring; the tests check that every name they use exists here.
package metrics
