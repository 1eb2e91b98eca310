package channel

import (
	"net/netip"
	"time"
)

// live returns the live channels.
func (m *Manager) live() []*Channel {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Channel, 0, len(m.channels))
	for _, c := range m.channels {
		out = append(out, c)
	}
	return out
}

// Snapshot is the state of one live channel.
type Snapshot struct {
	Info
	Age        time.Duration
	Idle       time.Duration
	LocalPeer  netip.AddrPort // latched on the requester's RTP port, if any
	RemotePeer netip.AddrPort // latched on the other party's RTP port, if any
	Stats      Stats
	// InKernel tells, per leg (RTP, RTCP), whether the fast path forwards
	// it now; otherwise relayd does, in userspace.
	InKernel [2]bool
}

// Channels returns a snapshot of every live channel.
func (m *Manager) Channels() []Snapshot {
	m.refreshFastPath()
	m.mu.Lock()
	live := make([]*Channel, 0, len(m.channels))
	for _, c := range m.channels {
		live = append(live, c)
	}
	m.mu.Unlock()
	out := make([]Snapshot, 0, len(live))
	for _, c := range live {
		local, remote := c.Latched()
		out = append(out, Snapshot{Info: c.info, Age: time.Since(c.created), Idle: c.idle(),
			LocalPeer: local, RemotePeer: remote, Stats: c.stats.snapshot(),
			InKernel: [2]bool{c.legs[0].inKernel.Load(), c.legs[1].inKernel.Load()}})
	}
	return out
}

// Totals are data-plane-wide figures.
type Totals struct {
	Active   int   // live channels
	Capacity int   // channels the port range holds
	Stats    Stats // counters of live and ended channels together
	// Served counts the channels, live or ended, that relayed at least
	// one datagram each way (Stats.Served): it only grows.
	Served uint64
	// Segmented counts datagrams sent inside another's UDP GSO message
	// (Config.GSO): hot flows' batches.
	Segmented uint64
}

// Totals sums the counters of every channel, live or ended.
func (m *Manager) Totals() Totals {
	m.refreshFastPath()
	m.mu.Lock()
	t := Totals{Active: len(m.channels), Capacity: m.pool.size(), Stats: m.ended, Served: m.endedServed}
	for _, c := range m.channels {
		s := c.stats.snapshot()
		t.Stats.add(s)
		if s.Served() {
			t.Served++
		}
	}
	m.mu.Unlock()
	t.Stats.Dropped[DropNoChannel] += m.sh.unrouted.Load()
	t.Segmented = m.sh.segmented.Load()
	return t
}

// Active is the number of live channels (cheaper than Totals: no
// counters are summed, so it can be asked on every request).
func (m *Manager) Active() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.channels)
}
