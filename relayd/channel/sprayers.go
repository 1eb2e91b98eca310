package channel

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jnrelay/jnrelay/internal/netclass"
)

// Sprayer detection. XEP-0278 tells the relay nothing about who the
// parties of a channel are, so a relay port learns its party from the
// traffic (latch.go). An attacker who sends to every port of the range —
// "RTP Bleed" — tries to be that party on every channel. A real party
// talks to the ports of its own channel only; a sprayer touches many.
// So a source address that, within sprayWindow, was refused as a foreign
// source, was displaced from or unmasked at a side it had latched, or hit
// a port no channel holds (steered ports), on sprayThreshold distinct
// channels (or ports) is blocked for sprayBlock: its datagrams
// are dropped before any latching (DropSprayer), sides latched to it are
// free again, and nothing is sent to it.
const (
	// DefaultSprayThreshold is how many distinct channels one address may
	// touch that way within sprayWindow before it is blocked.
	DefaultSprayThreshold = 16
	sprayWindow           = 5 * time.Second
	sprayBlock            = 10 * time.Minute
	// maxTracked bounds the table of watched addresses: a spoofer that
	// rotates sources cannot grow it (a source it cannot hold a port
	// with is harmless anyway; new ones wait until old ones age out).
	maxTracked = 4096
)

// sprayGuard watches sources across channels and keeps the block list.
type sprayGuard struct {
	threshold atomic.Int32 // 0 = detection off
	epoch     time.Time
	log       *slog.Logger

	mu      sync.Mutex
	tracked map[netip.Addr]*sprayTrack

	bmu      sync.RWMutex
	blocked  map[netip.Addr]int64 // until, ns since epoch
	nBlocked atomic.Int32         // len(blocked), read without the lock on every datagram
	total    atomic.Uint64        // addresses blocked since start
	onBlock  func(netip.Addr)     // called after an address is blocked
}

// sprayTrack is what one address touched in its current window.
type sprayTrack struct {
	since int64
	keys  []uint32 // distinct channels (their first port) or unrouted ports
}

func newSprayGuard(threshold int, log *slog.Logger, onBlock func(netip.Addr)) *sprayGuard {
	g := &sprayGuard{epoch: time.Now(), log: log, tracked: map[netip.Addr]*sprayTrack{},
		blocked: map[netip.Addr]int64{}, onBlock: onBlock}
	g.threshold.Store(int32(threshold))
	return g
}

func (g *sprayGuard) now() int64 { return int64(time.Since(g.epoch)) }

// isBlocked reports whether a is blocked. It costs one atomic load while
// nothing is blocked.
func (g *sprayGuard) isBlocked(a netip.Addr) bool {
	if g == nil || g.nBlocked.Load() == 0 {
		return false
	}
	a = netclass.Canonical(a)
	g.bmu.RLock()
	until, ok := g.blocked[a]
	g.bmu.RUnlock()
	return ok && until > g.now()
}

// report notes that a touched key (a channel's first port, or a port no
// channel holds) the way a sprayer does, and blocks a once it has touched
// the threshold of distinct keys within sprayWindow.
func (g *sprayGuard) report(a netip.Addr, key uint32) {
	if g == nil {
		return
	}
	threshold := int(g.threshold.Load())
	if threshold <= 0 {
		return
	}
	a = netclass.Canonical(a)
	now := g.now()
	g.mu.Lock()
	t := g.tracked[a]
	if t == nil {
		if len(g.tracked) >= maxTracked {
			g.expireLocked(now)
			if len(g.tracked) >= maxTracked {
				g.mu.Unlock()
				return
			}
		}
		t = &sprayTrack{since: now, keys: make([]uint32, 0, 4)}
		g.tracked[a] = t
	}
	if now-t.since > int64(sprayWindow) {
		t.since, t.keys = now, t.keys[:0]
	}
	for _, k := range t.keys {
		if k == key {
			g.mu.Unlock()
			return
		}
	}
	t.keys = append(t.keys, key)
	touched := len(t.keys)
	if touched >= threshold {
		delete(g.tracked, a)
	}
	g.mu.Unlock()
	if touched >= threshold {
		g.block(a, touched, now)
	}
}

// block puts a on the block list for sprayBlock.
func (g *sprayGuard) block(a netip.Addr, touched int, now int64) {
	g.bmu.Lock()
	_, again := g.blocked[a]
	g.blocked[a] = now + int64(sprayBlock)
	g.nBlocked.Store(int32(len(g.blocked)))
	g.bmu.Unlock()
	if !again {
		g.total.Add(1)
	}
	g.log.Warn("sprayer blocked", "addr", a.String(), "channels", touched,
		"window", sprayWindow.String(), "for", sprayBlock.String())
	if g.onBlock != nil {
		g.onBlock(a)
	}
}

// expireLocked forgets windows that have passed. The caller holds g.mu.
func (g *sprayGuard) expireLocked(now int64) {
	for a, t := range g.tracked {
		if now-t.since > int64(sprayWindow) {
			delete(g.tracked, a)
		}
	}
}

// sweep lifts blocks that have run out and forgets old windows.
func (g *sprayGuard) sweep() {
	now := g.now()
	g.mu.Lock()
	g.expireLocked(now)
	g.mu.Unlock()
	if g.nBlocked.Load() == 0 {
		return
	}
	g.bmu.Lock()
	for a, until := range g.blocked {
		if until <= now {
			delete(g.blocked, a)
			g.log.Info("sprayer unblocked", "addr", a.String())
		}
	}
	g.nBlocked.Store(int32(len(g.blocked)))
	g.bmu.Unlock()
}

// blockedNow lists the addresses blocked now.
func (g *sprayGuard) blockedNow() int {
	return int(g.nBlocked.Load())
}

// evictSprayer frees the sides latched to a blocked address: their
// workers treat the latch as vacant at the next datagram, nothing is sent
// toward it meanwhile, and legs the kernel forwards for it leave the
// kernel.
func (m *Manager) evictSprayer(a netip.Addr) {
	fp := m.sh.fp.Load()
	if fp == nil {
		return
	}
	for _, c := range m.live() {
		for l := range c.legs {
			for s := range c.legs[l].sides {
				if p := c.legs[l].sides[s].latched.Load(); p != nil && netclass.Canonical(p.Addr()) == a {
					fp.enqueue(c, l)
				}
			}
		}
	}
}

// Sprayers is what the sprayer guard did.
type Sprayers struct {
	Blocked      int    // addresses blocked now
	BlockedTotal uint64 // addresses blocked since start
}

// Sprayers reports the sprayer guard's figures.
func (m *Manager) Sprayers() Sprayers {
	return Sprayers{Blocked: m.sh.guard.blockedNow(), BlockedTotal: m.sh.guard.total.Load()}
}
