package channel

import (
	"time"

	"github.com/jnrelay/jnrelay/kernel"
)

// The shield moves the latching rule into the kernel for a port under
// attack. A latched port that keeps receiving datagrams from other sources
// gets a classic BPF socket filter (kernel.AttachSourceFilter) that accepts
// only the latched source, so a flood costs no wake-up, copy or receive
// buffer space any more. While it is up, userspace cannot see a new source,
// so the shield comes down again once the latched source has been silent
// for the latch grace: a NAT rebinding then re-latches as before, at most
// one scan later than without the shield.
//
// Datagrams the filter rejects are counted by the kernel in the socket's
// drop counter; the scan credits them to DropForeignSourceKernel. That
// counter also counts receive-buffer overflows, so an overflow of the
// latched source's own traffic while the shield is up is counted there too.
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

// noteForeign counts a foreign datagram dropped at in and raises the
// shield once there were shieldAfter of them. The caller is the channel's
// worker, holding c.mu for reading.
func (c *Channel) noteForeign(in *side) {
	in.shield.foreign++
	if in.fd < 0 || in.shield.up || in.shield.foreign < shieldAfter || c.worker == nil || !c.worker.m.shieldsWork.Load() {
		return
	}
	src := in.latched.Load()
	if src == nil {
		return
	}
	drops, err := kernel.Drops(in.fd)
	if err == nil {
		err = kernel.AttachSourceFilter(in.fd, *src)
	}
	if err != nil {
		// Without the filter the flood stays in userspace, where it is
		// dropped as before; do not try again on every datagram.
		if c.worker.m.shieldsWork.CompareAndSwap(true, false) {
			c.worker.m.log.Warn("in-kernel source filter unavailable: foreign datagrams are dropped in userspace only", "err", err)
		}
		return
	}
	in.shield.up, in.shield.seen, in.shield.foreign = true, drops, 0
	c.worker.m.shieldMu.Lock()
	c.worker.m.shielded[c] = struct{}{}
	c.worker.m.shieldMu.Unlock()
}

// creditShield credits the drops the kernel counted on s since the last
// credit to DropForeignSourceKernel. The caller holds c.mu for writing.
func (c *Channel) creditShield(s *side) {
	drops, err := kernel.Drops(s.fd)
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
	if err := kernel.DetachFilter(s.fd); err != nil {
		// The filter stays: the port keeps its latched source and a
		// new one cannot latch. Log it; the next scan tries again.
		c.worker.m.log.Warn("lowering in-kernel source filter", "channel", c.info.ID, "port", s.port, "err", err)
		return
	}
	s.shield.up, s.shield.foreign = false, 0
}

// scanShields credits the drops of every raised shield and lowers those
// whose latched source has been silent for the grace period.
func (m *Manager) scanShields() {
	m.shieldMu.Lock()
	chans := make([]*Channel, 0, len(m.shielded))
	for c := range m.shielded {
		chans = append(chans, c)
	}
	m.shieldMu.Unlock()
	if len(chans) == 0 {
		return
	}
	fp := m.fp.Load()
	if fp != nil {
		// An offloaded peer's last-seen time comes from the counters; read
		// them now, before any channel lock (the fast path takes them).
		fp.refresh(relatchFresh)
	}
	for _, c := range chans {
		if c.scanShield(fp) {
			m.shieldMu.Lock()
			delete(m.shielded, c)
			m.shieldMu.Unlock()
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
			m.guard.sweep()
			if tick%peersRefresh == 0 {
				m.refreshPeers() // interfaces and the public address change
			}
		}
	}
}
