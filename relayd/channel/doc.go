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
// # Layout
//
// Manager (manager.go) owns the port pool and the channels' lifecycle;
// Reconfigure (settings.go), the fast path's switching
// (fastpath_control.go) and the figures (totals.go, end.go) are its other
// jobs. What every channel consults while it relays — the peer rule, the
// sprayer guard, the bandwidth cap, the fast path, the port table — is in
// shared (shared.go), which the channel reaches without the Manager.
//
// The relay rules (Channel.forwardable, latch.go, peers.go, sprayers.go)
// are written once, above a transport (transport.go) that moves the
// datagrams: one socket per port (sockets.go, the default) or one steered
// socket per worker (steered.go). New picks the transport from the
// Config; a new way of receiving (TURN allocations, IPv6 listen
// addresses) is a new type implementing transport, in a file of its own,
// and one case in newTransport — transport.go says what each method must
// do. The in-kernel fast path (fastpath.go, fastpath_table.go) hands
// latched legs to kernel/tcfwd or kernel/nft and credits their counters
// back to the channels.
//
// This package never imports XMPP code: the control plane asks it for
// channels through Manager and learns of their end through OnEnd, and
// forwarding goes on whatever happens to XMPP sessions.
package channel
