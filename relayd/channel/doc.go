// Package channel is relayd's data plane: it owns the relay port pool and
// every live channel, and forwards UDP between the two parties of a call.
//
// A channel is four consecutive UDP ports P..P+3 (P even):
//
//	P   requester RTP   <-> P+2 other party RTP
//	P+1 requester RTCP  <-> P+3 other party RTCP
//
// Each port pair is an independent "leg". A port learns its party from the
// traffic, with evidence (latch.go): the first permitted source (peers.go)
// latches it tentatively and gets at most two datagrams until it has sent
// four while the other side was latched; another source takes the port only
// by carrying the call (out-sending a tentative party, or sending while a
// trusted one stays silent over the grace; never with a lone datagram); a source that touches many channels as a port sprayer does is
// blocked (sprayers.go); every port has a packet-rate ceiling that ends
// forwarding loops. A packet is forwarded only to a peer that has latched,
// so the relay never sends to an address that did not send to it first (no
// reflection, no amplification). Packets arriving before the peer latched
// are dropped and counted.
//
// A channel expires when it has forwarded no packet for its expire time (a
// fresh channel gets the same time to see its first forwarded packet).
// Traffic from non-latched sources and packets that could not be forwarded
// do not keep a channel alive, so a lone party or an attacker cannot hold
// ports forever. On expiry all four ports are closed and returned to the pool
// and the Manager's OnEnd callback reports the channel's final counters.
//
// This package never imports XMPP code: the control plane asks it for
// channels through Manager and learns of their end through OnEnd, and
// forwarding goes on whatever happens to XMPP sessions.
package channel
