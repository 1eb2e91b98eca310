package channel

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jnrelay/jnrelay/kernel/nft"
)

// FastPathMode selects the in-kernel fast path: the eBPF program of
// kernel/tcfwd or the nftables rules of kernel/nft.
type FastPathMode string

const (
	// FastPathOff relays every datagram in userspace.
	FastPathOff FastPathMode = "off"
	// FastPathAuto offloads latched legs when the host allows it, with
	// eBPF, else the nftables flowtable, else the stateless nftables
	// rules, and says once why not otherwise.
	FastPathAuto FastPathMode = "auto"
	// FastPathEBPF requires the eBPF fast path: New and Reconfigure fail
	// when it is unavailable.
	FastPathEBPF FastPathMode = "ebpf"
	// FastPathNftables requires the nftables fast path (stateless rules).
	FastPathNftables FastPathMode = "nftables"
	// FastPathFlowtable requires the nftables flowtable (kernel/nft's
	// Config.Flowtable: conntrack NAT legs offloaded to a flowtable).
	FastPathFlowtable FastPathMode = "flowtable"
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
	By           string            // what forwards: the table's name, while Active
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
	sh    *shared // the guard it consults, the listen address, the log
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
	gone     atomic.Bool  // the table went away with the offload broker (abandonLocked)

	// reopen opens the table anew through the offload broker (nil for a
	// table relayd opened itself, which cannot go away); orphans are the
	// legs the kernel had when it went and those queued since, offered
	// to the new one (guarded by mu).
	reopen     func() (kernelTable, error)
	reopenedAt time.Time // the last attempt; only run touches it
	orphans    map[legRef]bool

	counts *fastPathCounts // the Manager's, kept across Reconfigure

	cancel context.CancelFunc
	done   chan struct{}
}

// newFastPath runs a fast path over table t, which holds capacity flows
// (0: no fixed bound), until close. reopen, when not nil, opens a new
// table once t went away with the offload broker.
func newFastPath(sh *shared, counts *fastPathCounts, t kernelTable, capacity int, reopen func() (kernelTable, error)) *fastPath {
	ctx, cancel := context.WithCancel(context.Background())
	fp := &fastPath{sh: sh, log: sh.log, table: t, capacity: capacity, epoch: time.Now(), legs: map[legRef]*offloaded{}, counts: counts, reopen: reopen,
		work: make(chan struct{}, 1), poll: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go fp.run(ctx)
	return fp
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
			fp.tryReopen()
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
		fp.sh.guard.isBlocked(a.Addr()) || fp.sh.guard.isBlocked(b.Addr()) {
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
	if l := fp.sh.listen; !l.IsUnspecified() {
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
