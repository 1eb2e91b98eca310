package channel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jnrelay/jnrelay/kernel/nft"
	"github.com/jnrelay/jnrelay/kernel/tcfwd"
)

// FastPathMode selects the in-kernel fast path: the eBPF program of
// kernel/tcfwd or the nftables rules of kernel/nft.
type FastPathMode string

const (
	// FastPathOff relays every datagram in userspace.
	FastPathOff FastPathMode = "off"
	// FastPathAuto offloads latched legs when the host allows it, with
	// eBPF, else nftables, and says once why not otherwise.
	FastPathAuto FastPathMode = "auto"
	// FastPathEBPF requires the eBPF fast path: New and Reconfigure fail
	// when it is unavailable.
	FastPathEBPF FastPathMode = "ebpf"
	// FastPathNftables requires the nftables fast path.
	FastPathNftables FastPathMode = "nftables"
)

// kernelTable is a fast path implementation: kernel/tcfwd's Forwarder or
// kernel/nft's Table.
type kernelTable interface {
	// Apply removes and installs legs; nft.ErrConflict for a flow in use.
	Apply(remove, add []nft.Leg) error
	// Counters are what the kernel forwarded per installed flow.
	Counters() (map[nft.Flow]nft.Counter, error)
	// Close returns every leg to userspace.
	Close() error
	// Name names it for logs.
	Name() string
}

// Reasons a leg is not (or no longer) in the kernel, for FastPathStats.
const (
	NotOffloadedRateLimited = "rate_limited" // the channel has max_kbps: its bucket lives in userspace
	NotOffloadedIPv6        = "ipv6"         // the rules handle IPv4 only
	NotOffloadedConflict    = "conflict"     // the same two peer sockets already share another leg
	NotOffloadedKernel      = "kernel"       // the kernel refused the leg (map full, nftables transaction failed)
	NotOffloadedRoute       = "route"        // no local address toward a peer
	// NotOffloadedCeiling: the kernel forwarded faster than the packet
	// ceiling (Config.MaxPPS) — a loop — so the leg went back to
	// userspace, whose ceiling stops it, for the channel's life.
	NotOffloadedCeiling = "packet_ceiling"
)

var notOffloadedReasons = [...]string{NotOffloadedRateLimited, NotOffloadedIPv6, NotOffloadedConflict, NotOffloadedKernel, NotOffloadedRoute, NotOffloadedCeiling}

// NotOffloadedReasons lists every NotOffloaded* reason in order: the keys
// of FastPathStats.NotOffloaded, which metrics iterate.
func NotOffloadedReasons() []string { return slices.Clone(notOffloadedReasons[:]) }

// Timing of the counter reads. Counters are the only sign of life of an
// offloaded peer, so they drive last-seen (re-latching), idle expiry and
// the live statistics.
const (
	// pollInterval is the periodic read: one dump of the forwarding map.
	pollInterval = time.Second
	// relatchFresh is how recent the counters must be before a latch of
	// an offloaded leg may move: older data could hide a peer that is
	// still sending.
	relatchFresh = 100 * time.Millisecond
	// expiryFresh is how recent the counters must be before an
	// offloaded channel is declared idle; a burst of expiries shares one
	// read.
	expiryFresh = 200 * time.Millisecond
)

// FastPathStats describe the fast path for metrics.
type FastPathStats struct {
	Active       bool              // the table is installed
	OffloadedNow int               // legs in the kernel now
	Offloads     uint64            // legs installed or updated since start
	NotOffloaded map[string]uint64 // legs kept in userspace, by NotOffloaded* reason
}

// fastPathCounts are the fast path's cumulative counters.
type fastPathCounts struct {
	offloads     atomic.Uint64
	notOffloaded [len(notOffloadedReasons)]atomic.Uint64
	gauge        atomic.Int64 // legs in the kernel now
}

// legRef names one leg of a channel.
type legRef struct {
	c   *Channel
	leg int
}

// offloaded is a leg in the kernel and the counters already credited to
// its channel.
type offloaded struct {
	spec nft.Leg
	seen [2]nft.Counter // per side: what the kernel forwarded from that side's peer
	at   int64          // when seen was read, ns since the channel's creation
}

// fastPath moves latched legs into a kernelTable and credits their
// counters back to the channels. One goroutine installs queued legs and
// reads counters; the workers only queue (never block on netlink).
type fastPath struct {
	m     *Manager
	log   *slog.Logger
	table kernelTable
	// capacity is how many flows the table holds (0: no fixed bound).
	capacity int
	epoch    time.Time

	qmu   sync.Mutex // guards queue; taken by workers, never held across netlink
	queue []legRef
	work  chan struct{} // capacity 1: queue is not empty
	poll  chan struct{} // capacity 1: a worker wants fresh counters

	mu       sync.Mutex // serializes table operations; guards legs and closed
	legs     map[legRef]*offloaded
	closed   bool
	polledAt atomic.Int64 // start of the last counter read, ns since epoch; 0 = never

	counts *fastPathCounts // the Manager's, kept across Reconfigure

	cancel context.CancelFunc
	done   chan struct{}
}

// openFastPath opens the table for mode. It returns nil and no error when
// mode is off, or auto and the host cannot run it (logged once, with the
// reason). With steered ports only eBPF can serve: the nftables rules
// need a socket per port.
func openFastPath(m *Manager, mode FastPathMode, listen netip.Addr, maxFlows int, steered bool) (*fastPath, error) {
	var t kernelTable
	capacity := 0
	switch mode {
	case "", FastPathOff:
		return nil, nil
	case FastPathAuto, FastPathEBPF:
		f, err := tcfwd.Open(tcfwd.Config{Listen: listen, MaxFlows: maxFlows})
		if err == nil {
			t, capacity = f, maxFlows
			break
		}
		if mode == FastPathEBPF {
			return nil, fmt.Errorf("fast path: %w", err)
		}
		if steered {
			m.log.Info("in-kernel fast path unavailable, relaying in userspace", "ebpf", err.Error())
			return nil, nil
		}
		nt, nerr := nft.Open(nft.Config{Listen: listen})
		if nerr != nil {
			m.log.Info("in-kernel fast path unavailable, relaying in userspace", "ebpf", err.Error(), "nftables", nerr.Error())
			return nil, nil
		}
		m.log.Info("eBPF fast path unavailable, using nftables", "err", err.Error())
		t = nt
	case FastPathNftables:
		if steered {
			return nil, errSteeredFastPath
		}
		nt, err := nft.Open(nft.Config{Listen: listen})
		if err != nil {
			return nil, fmt.Errorf("fast path: %w", err)
		}
		t = nt
	default:
		return nil, fmt.Errorf("fast path mode %q: want off, auto, ebpf or nftables", mode)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fp := &fastPath{m: m, log: m.log, table: t, capacity: capacity, epoch: time.Now(), legs: map[legRef]*offloaded{}, counts: &m.fpCounts,
		work: make(chan struct{}, 1), poll: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go fp.run(ctx)
	m.log.Info("in-kernel fast path on: latched legs are forwarded by the kernel", "by", t.Name())
	return fp, nil
}

// run installs queued legs and reads counters until ctx ends.
func (fp *fastPath) run(ctx context.Context) {
	defer close(fp.done)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-fp.work:
			fp.process()
		case <-fp.poll:
			fp.refresh(relatchFresh / 2)
		case <-tick.C:
			fp.refresh(pollInterval / 2)
		}
	}
}

// enqueue asks for leg l of c to be (re)considered for the kernel: its
// latches changed. Workers call it; it never blocks.
func (fp *fastPath) enqueue(c *Channel, l int) {
	fp.qmu.Lock()
	fp.queue = append(fp.queue, legRef{c, l})
	fp.qmu.Unlock()
	select {
	case fp.work <- struct{}{}:
	default:
	}
}

// requestPoll asks for fresh counters without waiting for them.
func (fp *fastPath) requestPoll() {
	select {
	case fp.poll <- struct{}{}:
	default:
	}
}

// fresh reports whether the counters were read within d.
func (fp *fastPath) fresh(d time.Duration) bool {
	at := fp.polledAt.Load()
	return at != 0 && time.Since(fp.epoch)-time.Duration(at) < d
}

// desired is the kernel's form of leg l of c, or the reason it stays in
// userspace ("" with ok false: not latched on both sides yet).
func (fp *fastPath) desired(c *Channel, l int) (spec nft.Leg, reason string, ok bool) {
	s0, s1 := &c.legs[l].sides[0], &c.legs[l].sides[1]
	a, b := s0.latched.Load(), s1.latched.Load()
	if a == nil || b == nil || !s0.confirmed.Load() || !s1.confirmed.Load() ||
		fp.m.guard.isBlocked(a.Addr()) || fp.m.guard.isBlocked(b.Addr()) {
		// Only parties that carry the call go to the kernel, which
		// forwards without budgets or contests.
		return nft.Leg{}, "", false
	}
	if c.limiters[0] != nil {
		return nft.Leg{}, NotOffloadedRateLimited, false
	}
	if c.legs[l].overCeiling.Load() {
		return nft.Leg{}, NotOffloadedCeiling, false
	}
	if !a.Addr().Unmap().Is4() || !b.Addr().Unmap().Is4() {
		return nft.Leg{}, NotOffloadedIPv6, false
	}
	la, err := fp.localAddr(a.Addr())
	if err != nil {
		fp.log.Warn("fast path: no local address toward peer", "channel", c.info.ID, "peer", a.String(), "err", err.Error())
		return nft.Leg{}, NotOffloadedRoute, false
	}
	lb, err := fp.localAddr(b.Addr())
	if err != nil {
		fp.log.Warn("fast path: no local address toward peer", "channel", c.info.ID, "peer", b.String(), "err", err.Error())
		return nft.Leg{}, NotOffloadedRoute, false
	}
	return nft.Leg{
		A:      nft.Flow{Peer: netip.AddrPortFrom(a.Addr().Unmap(), a.Port()), Port: uint16(s0.port)},
		B:      nft.Flow{Peer: netip.AddrPortFrom(b.Addr().Unmap(), b.Port()), Port: uint16(s1.port)},
		LocalA: la, LocalB: lb,
	}, "", true
}

// localAddr is the address relayd's socket would send to peer from: the
// listen address, or when that is unspecified the source the kernel's
// route toward peer picks — so offloaded datagrams leave from the same
// address as userspace ones.
func (fp *fastPath) localAddr(peer netip.Addr) (netip.Addr, error) {
	if l := fp.m.cfg.Listen; !l.IsUnspecified() {
		return l.Unmap(), nil
	}
	// A connected UDP socket asks the kernel's route lookup without
	// sending anything (and without the netlink library's route and link
	// parsers, which small boards' flash cannot spare).
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(peer.Unmap(), 9)))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("route to %s: %w", peer, err)
	}
	defer c.Close()
	src := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	if !src.Is4() || src.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("route to %s has no IPv4 source address", peer)
	}
	return src, nil
}

// change is one leg's move into, within or out of the kernel.
type change struct {
	ref     legRef
	old     *offloaded
	spec    nft.Leg
	install bool
}

// maxLegsPerTransaction bounds one nftables transaction (4 map elements
// per leg, ≈ 100 bytes each).
const maxLegsPerTransaction = 128

// applyChunk applies changes in one transaction, or leg by leg when that
// fails.
func (fp *fastPath) applyChunk(changes []change, apply func([]change) error, commit func(change)) {
	err := apply(changes)
	if err == nil {
		for _, ch := range changes {
			commit(ch)
		}
		return
	}
	if len(changes) > 1 {
		fp.log.Warn("fast path transaction failed, retrying leg by leg", "legs", len(changes), "err", err.Error())
	}
	for _, ch := range changes {
		if len(changes) > 1 {
			err = apply([]change{ch})
		}
		if err == nil {
			commit(ch)
			continue
		}
		reason := NotOffloadedKernel
		if errors.Is(err, nft.ErrConflict) {
			reason = NotOffloadedConflict
		}
		fp.count(reason)
		fp.log.Warn("leg stays in userspace", "channel", ch.ref.c.info.ID, "leg", ch.ref.leg, "reason", reason, "err", err.Error())
		// A failed update leaves the old rules in force if they were;
		// remove them so userspace, which has the new latch, takes over.
		if ch.old != nil && fp.table.Apply([]nft.Leg{ch.old.spec}, nil) == nil {
			commit(change{ref: ch.ref})
		}
	}
}

// process installs, updates or removes the queued legs in one
// transaction; when that fails, leg by leg, so one bad leg costs only
// itself.
func (fp *fastPath) process() {
	fp.qmu.Lock()
	queue := fp.queue
	fp.queue = nil
	fp.qmu.Unlock()

	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.closed {
		return
	}
	var changes []change
	seen := map[legRef]bool{}
	for _, ref := range queue {
		if seen[ref] || !fp.m.isLive(ref.c) {
			continue
		}
		seen[ref] = true
		spec, reason, ok := fp.desired(ref.c, ref.leg)
		old := fp.legs[ref]
		if old != nil && ok && old.spec == spec {
			continue
		}
		if reason != "" {
			fp.count(reason)
		}
		if old == nil && !ok {
			continue
		}
		changes = append(changes, change{ref: ref, old: old, spec: spec, install: ok})
	}
	if len(changes) == 0 {
		return
	}
	// Legs leaving the kernel take their last counters with them: read
	// them first.
	for _, ch := range changes {
		if ch.old != nil {
			fp.pollLocked()
			break
		}
	}
	apply := func(chs []change) error {
		var remove, add []nft.Leg
		for _, ch := range chs {
			if ch.old != nil {
				remove = append(remove, ch.old.spec)
			}
			if ch.install {
				add = append(add, ch.spec)
			}
		}
		return fp.table.Apply(remove, add)
	}
	commit := func(ch change) {
		l := &ch.ref.c.legs[ch.ref.leg]
		if ch.install {
			fp.legs[ch.ref] = &offloaded{spec: ch.spec, at: int64(time.Since(ch.ref.c.created))}
			l.inKernel.Store(true)
			fp.counts.offloads.Add(1)
			fp.log.Debug("leg offloaded", "channel", ch.ref.c.info.ID, "leg", ch.ref.leg,
				"peer_a", ch.spec.A.Peer.String(), "peer_b", ch.spec.B.Peer.String())
		} else {
			delete(fp.legs, ch.ref)
			l.inKernel.Store(false)
		}
	}
	// Transactions of at most maxLegsPerTransaction: one netlink batch
	// must fit the socket's buffers (1,000 legs at once fail with
	// EMSGSIZE), and a failure costs a retry of one chunk only.
	for len(changes) > 0 {
		chunk := changes[:min(len(changes), maxLegsPerTransaction)]
		changes = changes[len(chunk):]
		fp.applyChunk(chunk, apply, commit)
	}
	fp.counts.gauge.Store(int64(len(fp.legs)))
}

func (fp *fastPath) count(reason string) {
	for i, r := range notOffloadedReasons {
		if r == reason {
			fp.counts.notOffloaded[i].Add(1)
		}
	}
}

// refresh reads the counters unless they were read within maxAge.
func (fp *fastPath) refresh(maxAge time.Duration) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.closed || (maxAge > 0 && fp.fresh(maxAge)) {
		return
	}
	fp.pollLocked()
}

// pollLocked reads every offloaded flow's counter and credits what is new
// to its channel: packets and bytes forwarded, the peer's last-seen time
// and the channel's last forward.
func (fp *fastPath) pollLocked() {
	if len(fp.legs) == 0 {
		fp.polledAt.Store(int64(time.Since(fp.epoch)))
		return
	}
	started := time.Since(fp.epoch)
	cs, err := fp.table.Counters()
	if err != nil {
		fp.log.Warn("fast path counters unreadable", "err", err.Error())
		return
	}
	for ref, o := range fp.legs {
		c := ref.c
		now := int64(time.Since(c.created))
		elapsed := now - o.at
		o.at = now
		for s, flow := range [2]nft.Flow{o.spec.A, o.spec.B} {
			cur, ok := cs[flow]
			if !ok || cur.Packets <= o.seen[s].Packets {
				continue
			}
			if c.ppsInterval > 0 && int64(cur.Packets-o.seen[s].Packets) > (elapsed+c.ppsBurst)/c.ppsInterval &&
				!c.legs[ref.leg].overCeiling.Swap(true) {
				// Faster than the ceiling allows: back to userspace,
				// where the ceiling holds datagram by datagram.
				fp.log.Warn("fast path: leg over the packet ceiling, relayed in userspace from now on", "channel", c.info.ID,
					"leg", ref.leg, "packets", cur.Packets-o.seen[s].Packets, "seconds", float64(elapsed)/1e9)
				fp.enqueue(c, ref.leg)
			}
			dir := Direction(s)
			c.stats.packets[dir].Add(cur.Packets - o.seen[s].Packets)
			c.stats.bytes[dir].Add(cur.Bytes - o.seen[s].Bytes)
			c.stats.offloaded[dir].Add(cur.Packets - o.seen[s].Packets)
			o.seen[s] = cur
			c.legs[ref.leg].sides[s].lastSeen.Store(now)
			c.lastForward.Store(now)
		}
	}
	fp.polledAt.Store(int64(started))
}

// retire takes c's legs out of the kernel before its sockets close. With
// final, the counters are read first so the channel's totals include the
// kernel's last datagrams; an expired channel skips that (it was idle by
// fresh counters).
func (fp *fastPath) retire(c *Channel, final bool) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.closed {
		return
	}
	var remove []nft.Leg
	var refs []legRef
	for l := range c.legs {
		if o := fp.legs[legRef{c, l}]; o != nil {
			remove = append(remove, o.spec)
			refs = append(refs, legRef{c, l})
		}
	}
	if len(remove) == 0 {
		return
	}
	// A channel's last counts: one dump of the whole table, shared by
	// every channel that ends within finalPollShare (a thousand expiring
	// together must not cost a thousand dumps).
	if final && !fp.fresh(finalPollShare) {
		fp.pollLocked()
	}
	if err := fp.table.Apply(remove, nil); err != nil {
		// The sockets close anyway; rules left behind forward to peers of
		// a dead channel until the table goes. Say so.
		fp.log.Error("fast path: could not remove a channel's legs", "channel", c.info.ID, "err", err.Error())
	}
	for _, ref := range refs {
		delete(fp.legs, ref)
		c.legs[ref.leg].inKernel.Store(false)
	}
	fp.counts.gauge.Store(int64(len(fp.legs)))
}

// close reads the counters one last time, deletes the table (every leg
// returns to userspace, whose latches never stopped being valid) and
// stops the goroutine. It is idempotent.
func (fp *fastPath) close() {
	fp.cancel()
	<-fp.done
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.closed {
		return
	}
	fp.pollLocked()
	fp.closed = true
	if err := fp.table.Close(); err != nil {
		fp.log.Error("fast path: could not remove it from the kernel", "by", fp.table.Name(), "err", err.Error())
	}
	for ref := range fp.legs {
		ref.c.legs[ref.leg].inKernel.Store(false)
	}
	fp.legs = map[legRef]*offloaded{}
	fp.counts.gauge.Store(0)
	fp.log.Info("in-kernel fast path off: every leg is relayed in userspace", "was", fp.table.Name())
}

func (n *fastPathCounts) stats(active bool) FastPathStats {
	s := FastPathStats{Active: active, OffloadedNow: int(n.gauge.Load()), Offloads: n.offloads.Load(),
		NotOffloaded: make(map[string]uint64, len(notOffloadedReasons))}
	for i, r := range notOffloadedReasons {
		s.NotOffloaded[r] = n.notOffloaded[i].Load()
	}
	return s
}

// finalPollShare is how old a counter read may be to count as a channel's
// final one (what the kernel forwards in that window after the read is
// not credited to the ended channel).
const finalPollShare = 20 * time.Millisecond
