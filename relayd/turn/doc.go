// Package turn is relayd's built-in TURN server (RFC 8656), pion/turn on
// relayd's own data plane: every allocation's relayed address is a port
// of the relay port range (channel.Manager.OpenRelayPort), so channels
// and allocations share one pool; every allocation is reserved through
// the admission gate, so the relay's and the requesters' limits count
// both; and every peer is judged by the data plane's live peer rule
// (channel.Manager.PermitsPeer), so TURN cannot reach what a channel may
// not latch: loopback, unspecified, multicast, private addresses at a
// public relay, the relay's own addresses and live ports.
//
// A requester the gate refuses gets 486 Allocation Quota Reached (quota.go,
// before pion opens anything); a failure after that is 508. The live
// allocations are listed and can be ended (allocations.go).
//
// Authentication is TURN REST (username "<expiry>:<id>", password
// base64(HMAC-SHA1(secret, username))); credentials are minted by the
// XEP-0215 handlers, which record who each id was minted for
// (Requesters).
//
// It serves UDP, TCP and TLS (turns:, for networks that let only TLS
// out); relayed addresses are UDP whatever the client's transport (RFC
// 6062 TCP relaying is refused). pion/turn offers no hook before
// authentication, so the rate limit on unauthenticated requests is
// applied to the UDP listening socket (limit.go), where sources can be
// forged, and answers that carry no MESSAGE-INTEGRITY are bounded per
// source by the bytes that source sent (amplification.go), so a forged
// source gets no amplification; a stream's source has completed a TCP
// handshake, and the TLS
// listener (tlslistener.go) bounds the connections each source holds
// and the time a handshake may take.
package turn
