package stun

import "sync/atomic"

// DropReason says why a received datagram was not answered.
type DropReason int

// The malformed reasons come first (see DropReason.Malformed).
const (
	// DropNotSTUN: the first byte is above 3, so the datagram is not STUN
	// at all (RFC 7983: ZRTP, DTLS, TURN channel data, RTP; or noise).
	DropNotSTUN DropReason = iota
	// DropTruncated: shorter than the 20-byte header, or than the header's
	// message length says.
	DropTruncated
	// DropBadLength: the message length is not a multiple of 4, or the
	// datagram carries bytes past it.
	DropBadLength
	// DropBadCookie: the magic cookie is not 0x2112A442 (an RFC 3489 request
	// when Config.Classic is off).
	DropBadCookie
	// DropBadAttribute: an attribute runs past the end of the message, or a
	// known attribute has a value of the wrong size.
	DropBadAttribute
	// DropBadFingerprint: a FINGERPRINT attribute that is not 4 bytes, not
	// the last attribute, or whose CRC does not match.
	DropBadFingerprint

	// DropNotBinding: a request for a method other than Binding
	// (Allocate, Refresh, Shared Secret, ...).
	DropNotBinding
	// DropIndication: an indication of any method.
	DropIndication
	// DropResponse: a success or error response of any method.
	DropResponse
	// DropUnknownAttribute: a comprehension-required attribute this server
	// does not implement (RFC 8489 would answer 420; this server answers
	// only with success responses), including CHANGE-REQUEST asking for
	// another address or port, RESPONSE-ADDRESS and RESPONSE-PORT.
	DropUnknownAttribute
	// DropBadSource: the source port is 0, or the source address is
	// unspecified, multicast or the IPv4 limited broadcast address.
	DropBadSource
	// DropOversize: the datagram is larger than MaxRequest.
	DropOversize
	// DropSendError: the kernel refused to send the response.
	DropSendError
	// DropRateLimited: a well-formed request over Config.MaxResponsesPerSecond
	// (a flood, or a reflection attack with forged sources).
	DropRateLimited
	// DropSourceRateLimited: a well-formed request over its source's share
	// of Config.MaxResponsesPerSecond (one flooder, which is thus kept from
	// using up everyone's answers).
	DropSourceRateLimited
	numDropReasons
)

// firstPolicyReason is the first reason that is not "malformed".
const firstPolicyReason = DropNotBinding

var dropReasonNames = [numDropReasons]string{
	"not_stun", "truncated", "bad_length", "bad_cookie", "bad_attribute", "bad_fingerprint",
	"not_binding", "indication", "response", "unknown_attribute", "bad_source", "oversize", "send_error",
	"rate_limited", "source_rate_limited",
}

// String is the reason's name as logged ("bad_cookie").
func (r DropReason) String() string {
	if r < 0 || r >= numDropReasons {
		return "unknown"
	}
	return dropReasonNames[r]
}

// Malformed reports whether r means the datagram was not a well-formed
// STUN message (as opposed to a well-formed one this server does not answer).
func (r DropReason) Malformed() bool { return r >= 0 && r < firstPolicyReason }

// Stats are the counters of a Server since New. Every datagram read is
// counted once in Requests and then exactly once either in Responses or in
// one Dropped reason, so Requests == Responses + TotalDropped() whenever the
// server is idle.
type Stats struct {
	// Requests counts every datagram received, well-formed or not.
	Requests uint64
	// Responses counts Binding success responses sent.
	Responses uint64
	// Malformed is the sum of Dropped over the malformed reasons
	// (DropReason.Malformed).
	Malformed uint64
	// Dropped counts unanswered datagrams by reason, indexed by DropReason.
	Dropped [numDropReasons]uint64
}

// TotalDropped is the sum of Dropped over all reasons.
func (s Stats) TotalDropped() uint64 {
	var n uint64
	for _, v := range s.Dropped {
		n += v
	}
	return n
}

// DroppedBy returns the named counters that are not zero, for logs.
func (s Stats) DroppedBy() map[string]uint64 {
	m := map[string]uint64{}
	for r, v := range s.Dropped {
		if v != 0 {
			m[DropReason(r).String()] = v
		}
	}
	return m
}

// counters are the live, concurrently readable form of Stats.
type counters struct {
	requests  atomic.Uint64
	responses atomic.Uint64
	dropped   [numDropReasons]atomic.Uint64
}

func (c *counters) snapshot() Stats {
	s := Stats{Requests: c.requests.Load(), Responses: c.responses.Load()}
	for r := range s.Dropped {
		s.Dropped[r] = c.dropped[r].Load()
		if DropReason(r).Malformed() {
			s.Malformed += s.Dropped[r]
		}
	}
	return s
}
