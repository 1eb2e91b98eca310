package channel

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The shield moves the latching rule into the kernel for a port under
// attack. A latched port that keeps receiving datagrams from other sources
// gets a filter that accepts only the latched source, so a flood costs no
// wake-up, copy or receive buffer space any more: a classic BPF socket
// filter on the port's own socket (kernel.AttachSourceFilter, per-port
// transport), or the source in the port's entry of the steering program's
// port map (kernel.Steering.Shield, steered transport), which hands the
// other sources' datagrams to a sink that drops them. While it is up,
// userspace cannot see a new source, so the shield comes down again once
// the latched source has been silent for the latch grace: a NAT
// rebinding then re-latches as before, at most one scan later than
// without the shield.
//
// Datagrams the filter rejects are counted by the kernel — in the socket's
// drop counter, or per port in the steering program's map — and the scan
// credits them to DropForeignSourceKernel. A socket's counter also counts
// receive-buffer overflows, so there an overflow of the latched source's
// own traffic while the shield is up is counted too.
const (
	// shieldAfter is how many foreign datagrams a latched port drops in
	// userspace before its shield goes up: a stray packet or a peer's old
	// NAT mapping stays in userspace, a flood does not.
	shieldAfter = 32
	// shieldScan is how often raised shields are checked: drop counts
	// credited, shields of silent sources lowered.
	shieldScan = 250 * time.Millisecond
	// peersRefresh is how many scans pass between rebuilds of the peer
	// rule from the host's addresses (2 s).
	peersRefresh = 8
)

// shield is a port's filter state. It is guarded by the channel's mu: the
// channel's worker changes it holding the read lock (a channel has one
// worker), the scan and close hold the write lock.
type shield struct {
	foreign  uint32 // foreign datagrams dropped in userspace since the latch or the last change
	up       bool   // the source filter is attached
	seen     uint32 // the socket's drop count when last credited
	credited uint32 // socket drops credited to DropForeignSourceKernel, in total
}

// shieldOps raises and lowers a port's shield in the kernel: a
// transport's way (sockets.go, steered.go). The caller holds the
// channel's mu.
type shieldOps interface {
	// raise makes s accept datagrams from src only, and returns the
	// drop count its filter starts from.
	raise(s *side, src netip.AddrPort) (drops uint32, err error)
	// drops is s's drop count now (wrapping: only differences count).
	drops(s *side) (uint32, error)
	// lower lets every source reach s again.
	lower(s *side) error
}

// shieldSet is the Manager's set of channels with a shield up, which the
// scan visits; works turns false once attaching one failed.
type shieldSet struct {
	mu       sync.Mutex
	shielded map[*Channel]struct{}
	works    atomic.Bool
}

// init readies an empty set, with shields assumed to work.
func (s *shieldSet) init() {
	s.shielded = map[*Channel]struct{}{}
	s.works.Store(true)
}

func (s *shieldSet) add(c *Channel) {
	s.mu.Lock()
	s.shielded[c] = struct{}{}
	s.mu.Unlock()
}

func (s *shieldSet) remove(c *Channel) {
	s.mu.Lock()
	delete(s.shielded, c)
	s.mu.Unlock()
}

// list returns the shielded channels.
func (s *shieldSet) list() []*Channel {
	s.mu.Lock()
	defer s.mu.Unlock()
	chans := make([]*Channel, 0, len(s.shielded))
	for c := range s.shielded {
		chans = append(chans, c)
	}
	return chans
}

// noteForeign counts a foreign datagram dropped at in and raises the
// shield once there were shieldAfter of them. The caller is the channel's
// worker, holding c.mu for reading.
func (c *Channel) noteForeign(in *side) {
	in.shield.foreign++
	if in.shield.up || in.shield.foreign < shieldAfter || c.sh == nil || c.sh.shieldOps == nil || !c.sh.shields.works.Load() {
		return
	}
	src := in.latched.Load()
	if src == nil {
		return
	}
	drops, err := c.sh.shieldOps.raise(in, *src)
	if err != nil {
		// Without the filter the flood stays in userspace, where it is
		// dropped as before; do not try again on every datagram.
		if c.sh.shields.works.CompareAndSwap(true, false) {
			c.sh.log.Warn("in-kernel source filter unavailable: foreign datagrams are dropped in userspace only", "err", err)
		}
		return
	}
	in.shield.up, in.shield.seen, in.shield.foreign = true, drops, 0
	c.sh.shields.add(c)
}

// creditShield credits the drops the kernel counted on s since the last
// credit to DropForeignSourceKernel. The caller holds c.mu for writing.
func (c *Channel) creditShield(s *side) {
	drops, err := c.sh.shieldOps.drops(s)
	if err != nil {
		return
	}
	d := drops - s.shield.seen
	s.shield.seen = drops
	s.shield.credited += d
	c.stats.dropped[DropForeignSourceKernel].Add(uint64(d))
}

// lowerShield detaches s's filter so every source reaches userspace again.
// The caller holds c.mu for writing.
func (c *Channel) lowerShield(s *side) {
	c.creditShield(s)
	if err := c.sh.shieldOps.lower(s); err != nil {
		// The filter stays: the port keeps its latched source and a
		// new one cannot latch. Log it; the next scan tries again.
		c.sh.log.Warn("lowering in-kernel source filter", "channel", c.info.ID, "port", s.port, "err", err)
		return
	}
	s.shield.up, s.shield.foreign = false, 0
}

// scanShields credits the drops of every raised shield and lowers those
// whose latched source has been silent for the grace period.
func (m *Manager) scanShields() {
	chans := m.sh.shields.list()
	if len(chans) == 0 {
		return
	}
	fp := m.sh.fp.Load()
	if fp != nil {
		// An offloaded peer's last-seen time comes from the counters; read
		// them now, before any channel lock (the fast path takes them).
		fp.refresh(relatchFresh)
	}
	for _, c := range chans {
		if c.scanShield(fp) {
			m.sh.shields.remove(c)
		}
	}
}

// scanShield does scanShields' work for c; it reports whether c has no
// shield up any more.
func (c *Channel) scanShield(fp *fastPath) (done bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return true
	}
	now := int64(time.Since(c.created))
	done = true
	for _, s := range c.sides() {
		if !s.shield.up {
			continue
		}
		silent := now-s.lastSeen.Load() > int64(c.grace)
		if silent && c.legs[s.leg].inKernel.Load() && (fp == nil || !fp.fresh(relatchFresh)) {
			silent = false // not provably silent: keep the shield until the counters say so
		}
		if silent {
			c.lowerShield(s)
		} else {
			c.creditShield(s)
		}
		done = done && !s.shield.up
	}
	return done
}

// shieldLoop runs scanShields until the workers stop.
func (m *Manager) shieldLoop() {
	t := time.NewTicker(shieldScan)
	defer t.Stop()
	for tick := 1; ; tick++ {
		select {
		case <-m.closing:
			return
		case <-t.C:
			m.scanShields()
			m.sh.guard.sweep()
			if tick%peersRefresh == 0 {
				m.refreshPeers() // interfaces and the public address change
			}
		}
	}
}
