package channel

import (
	"slices"
	"sync/atomic"
)

// Direction of relayed traffic, named after the channel result's attributes:
// the requester sends to localport, the other party to remoteport.
type Direction int

const (
	// LocalToRemote is traffic from the requester (ports P, P+1) to the other party.
	LocalToRemote Direction = iota
	// RemoteToLocal is traffic from the other party (ports P+2, P+3) to the requester.
	RemoteToLocal
	numDirections
)

func (d Direction) String() string {
	if d == LocalToRemote {
		return "local_to_remote"
	}
	return "remote_to_local"
}

// DropReason says why a received datagram was not forwarded.
type DropReason int

const (
	// DropPeerNotLatched: the destination side has not sent yet, so there is
	// no address to forward to.
	DropPeerNotLatched DropReason = iota
	// DropForeignSource: the datagram came from an address other than the one
	// latched on that port, while the latched source was still active.
	DropForeignSource
	// DropRateLimited: the channel's maxkbps bucket was empty.
	DropRateLimited
	// DropOversize: the datagram did not fit the receive buffer (MaxDatagram).
	DropOversize
	// DropSendError: the kernel refused to send the forwarded datagram.
	DropSendError
	// DropForeignSourceKernel: like DropForeignSource, but dropped by the
	// port's in-kernel shield while the port was under a flood
	// (shield.go): its socket's source filter, or its entry in the
	// steering program's map; counted by the kernel, credited every scan.
	DropForeignSourceKernel
	// DropNoChannel: a steered datagram for a port no channel holds in
	// the port table: one that arrived while its channel was being set up
	// or ended (only held ports are steered; counted relay-wide only; see
	// steered.go).
	DropNoChannel
	// DropForbiddenPeer: the source may not be a party (peers.go): the
	// relay's own address and ports, loopback, multicast, broadcast,
	// unspecified, or a private address at a public relay.
	DropForbiddenPeer
	// DropSprayer: from, or toward, a source blocked as a port sprayer
	// (sprayers.go).
	DropSprayer
	// DropUnconfirmedPeer: toward a side whose latched source has not
	// shown yet that it carries the call, past the probe budget (latch.go).
	DropUnconfirmedPeer
	// DropPacketCeiling: past the per-port packet-rate ceiling
	// (Config.MaxPPS) — a forwarding loop, or a flood from a latched source.
	DropPacketCeiling
	numDropReasons
)

var dropReasonNames = [numDropReasons]string{
	"peer_not_latched", "foreign_source", "rate_limited", "oversize", "send_error", "foreign_source_kernel", "no_channel",
	"forbidden_peer", "sprayer", "unconfirmed_peer", "packet_ceiling",
}

func (r DropReason) String() string { return dropReasonNames[r] }

// DropReasons lists every DropReason in order: what metrics and logs
// iterate, so a reason added here reaches them without another list.
func DropReasons() []DropReason {
	rs := make([]DropReason, numDropReasons)
	for r := range rs {
		rs[r] = DropReason(r)
	}
	return rs
}

// DropReasonNames are the names (String) of DropReasons, in order.
func DropReasonNames() []string { return slices.Clone(dropReasonNames[:]) }

// Stats are the counters of one channel or of the whole data plane.
type Stats struct {
	Packets [numDirections]uint64
	Bytes   [numDirections]uint64
	Dropped [numDropReasons]uint64
	// Offloaded are the datagrams of Packets that the kernel's fast path
	// forwarded (counted from its rules, never seen by userspace).
	Offloaded [numDirections]uint64
	Relatched uint64 // latches moved to a new source after the grace period
	// KernelDrops are datagrams the kernel dropped because a port's
	// receive buffer was full (the relay fell behind), apart from those
	// credited to DropForeignSourceKernel; known when the channel ends.
	KernelDrops uint64
}

// Served reports whether the channel relayed at least one datagram each
// way: it carried a call (a channel granted but never used, as when the
// call found a direct path, served none).
func (s Stats) Served() bool {
	return s.Packets[LocalToRemote] > 0 && s.Packets[RemoteToLocal] > 0
}

// add accumulates o into s.
func (s *Stats) add(o Stats) {
	for d := range s.Packets {
		s.Packets[d] += o.Packets[d]
		s.Bytes[d] += o.Bytes[d]
		s.Offloaded[d] += o.Offloaded[d]
	}
	for r := range s.Dropped {
		s.Dropped[r] += o.Dropped[r]
	}
	s.Relatched += o.Relatched
	s.KernelDrops += o.KernelDrops
}

// TotalDropped is the sum of drops over all reasons.
func (s Stats) TotalDropped() uint64 {
	var n uint64
	for _, v := range s.Dropped {
		n += v
	}
	return n
}

// counters is the live, concurrently updated form of Stats.
type counters struct {
	packets     [numDirections]atomic.Uint64
	bytes       [numDirections]atomic.Uint64
	offloaded   [numDirections]atomic.Uint64
	dropped     [numDropReasons]atomic.Uint64
	relatched   atomic.Uint64
	kernelDrops atomic.Uint64
}

func (c *counters) snapshot() Stats {
	var s Stats
	for d := range s.Packets {
		s.Packets[d] = c.packets[d].Load()
		s.Bytes[d] = c.bytes[d].Load()
		s.Offloaded[d] = c.offloaded[d].Load()
	}
	for r := range s.Dropped {
		s.Dropped[r] = c.dropped[r].Load()
	}
	s.Relatched = c.relatched.Load()
	s.KernelDrops = c.kernelDrops.Load()
	return s
}
