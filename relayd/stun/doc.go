// Package stun is relayd's STUN server: it answers STUN Binding requests
// (RFC 8489, formerly RFC 5389) so that clients of the relay, and other
// relays, can learn the public address and port a NAT gave them. It is the
// service advertised as <stun/> in Jingle Nodes <services/> answers and in
// XEP-0215 external service discovery. It does no TURN, no authentication
// and no RFC 5780 NAT behaviour discovery.
//
// # What is answered
//
// A Server reads one UDP socket with one goroutine. A datagram is answered
// when it is a well-formed Binding request: a first byte of 0 to 3 (the
// STUN range of RFC 7983's demultiplexing), a length that is a multiple of
// 4 and matches the datagram exactly, the magic cookie 0x2112A442,
// attributes that fit the message, a FINGERPRINT (optional) that is the
// last attribute and whose CRC matches, and no comprehension-required
// attribute (type below 0x8000) other than a CHANGE-REQUEST asking for no
// change. The answer is one Binding success
// response, sent from the same socket to the source address, carrying the
// request's transaction ID and, in this order:
//
//   - XOR-MAPPED-ADDRESS: the source address and port as the server saw
//     them (IPv4 or IPv6; an IPv4-mapped IPv6 source from a dual-stack
//     socket is reported as IPv4);
//   - SOFTWARE: Config.Software (default "jnrelay");
//   - FINGERPRINT.
//
// With Config.Classic, Binding requests without the magic cookie (RFC 3489
// clients, such as Debian's stun-client) are answered as RFC 5389 section
// 12.2 recommends: the 16 bytes of the old transaction ID are echoed and
// MAPPED-ADDRESS replaces XOR-MAPPED-ADDRESS; SOFTWARE is padded with spaces
// to a multiple of 4 bytes because such clients reject other lengths.
//
// Nothing else is ever answered: not malformed datagrams, not other methods,
// not indications, not responses (so two STUN servers cannot be made to
// talk to each other), and no error responses either (RFC 8489 would send
// 420 for unknown attributes; a server that only ever sends success
// responses to well-formed requests has less to get wrong). A datagram
// whose source port is 0, or whose source address is unspecified,
// 0.0.0.0/8, multicast or 255.255.255.255, is never answered.
//
// # Amplification
//
// Each answered request yields exactly one response, to the request's own
// source, of at most MaxResponse (88) bytes: 20 header + 24 (IPv6
// XOR-MAPPED-ADDRESS; 12 for IPv4) + 4 + SOFTWARE padded to 4 (at most
// MaxSoftware, 32) + 8 FINGERPRINT. The smallest answerable request is a
// bare 20-byte header, so a spoofed request is amplified at most 4.4 times
// in bytes and never in packets. With the default SOFTWARE a response is 52
// bytes for IPv4 and 64 for IPv6: 2.6 and 3.2 times a bare request, 1.9 and
// 2.3 times a typical 28-byte request with FINGERPRINT.
//
// With Config.MaxResponsesPerSecond the answers are capped in all, and
// each source (an IPv4 address, an IPv6 /64) has a token bucket of its own
// of a tenth of the cap, checked first: one flooder, forged or not, uses
// up only its own share, and everyone else is still answered. The buckets
// live in a table bounded at maxSources entries (refilled ones forgotten
// first), so rotating sources cost bounded memory; a spoofer rotating
// through many sources is bounded by the overall cap alone.
//
// # Configuration
//
// Config.Listen is the address to bind; the zero value means every address
// on DefaultPort (3478), and port 0 an ephemeral port (Server.Addr tells
// which). Config.Conn hands the server a socket the caller opened instead,
// for example inside another network namespace. Config.Software is the
// SOFTWARE value (UTF-8, at most 32 bytes), Config.Logger receives start,
// stop (with totals) and error events, and per-drop lines at debug level.
// Config.Classic enables the RFC 3489 compatibility above.
//
// # Counters
//
// Server.Stats returns Stats: Requests (every datagram read), Responses
// (success responses sent), Dropped by DropReason, and Malformed, the sum
// of the malformed reasons. Each datagram is counted once in Requests and
// then once in Responses or in one Dropped reason. The reasons, by the
// names used in logs:
//
//	malformed:
//	not_stun           first byte above 3 (RFC 7983: ZRTP, DTLS, RTP, noise)
//	truncated          shorter than the header or than its length says
//	bad_length         length not a multiple of 4, or bytes past it
//	bad_cookie         no magic cookie (an RFC 3489 request without Classic)
//	bad_attribute      an attribute runs past the message, or a bad CHANGE-REQUEST size
//	bad_fingerprint    FINGERPRINT of the wrong size, not last, or CRC mismatch
//	well-formed but not answered:
//	not_binding        a request for another method (Allocate, ...)
//	indication         an indication
//	response           a success or error response
//	unknown_attribute  an unsupported comprehension-required attribute,
//	                   including CHANGE-REQUEST asking for a change
//	bad_source         source port 0, or unspecified/multicast/broadcast source
//	oversize           larger than MaxRequest (1500) bytes
//	send_error         the response could not be built or sent
//	rate_limited       over Config.MaxResponsesPerSecond, all sources together
//	source_rate_limited over its source's share of it (a tenth)
//
// # Probes
//
// Server.OpenProbe lends the socket to the reachability check
// (relayd/reachability), one probe at a time: it sends Binding requests
// from the STUN port to the configured STUN server, and while it is open
// the responses the server reads — never answered, counted as dropped
// (response) — are also handed to it, at most 16 waiting.
//
// # Cost
//
// Answering a Binding request allocates nothing: the request is decoded
// and the response built by github.com/pion/stun/v4 into buffers the
// Server reuses.
package stun
