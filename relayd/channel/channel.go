package channel

import (
	"errors"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"github.com/jnrelay/jnrelay/kernel"
)

// MaxDatagram is the largest datagram the relay forwards
// (kernel.MaxDatagram, shared with the in-kernel fast paths); larger
// datagrams are dropped and counted as DropOversize, never truncated.
const MaxDatagram = kernel.MaxDatagram

// side is one port of a leg and the party latched on it.
type side struct {
	ch        *Channel
	leg, side int // position in ch.legs
	port      int
	// sock is the port's own socket under the per-port transport
	// (sockets.go); nil under a transport that shares sockets.
	sock *kernel.Socket
	// latched is the source this port accepts and the destination traffic
	// for this side goes to; nil until the first datagram arrives. Only the
	// channel's worker stores it.
	latched atomic.Pointer[netip.AddrPort]
	// lastSeen is when the latched source last sent, in nanoseconds since the
	// channel's creation (monotonic).
	lastSeen   atomic.Int64
	latchState              // latching evidence (latch.go)
	ceiling    packetBucket // the packet-rate ceiling of datagrams arriving here
	shield     shield       // the in-kernel source filter (shield.go)
	// hot is set once a receive filled a whole batch on this port: its
	// receive buffer (and the send buffer of the port it forwards from)
	// then grew to kernel.HotFlowBuffer. Only the channel's worker uses it.
	hot bool
	// noGSO is set once the kernel refused a segmented send toward this
	// side's peer (kernel.ErrNoSegmentation): its batches then go out one
	// datagram a message. Only the channel's worker uses it.
	noGSO bool
}

// leg is a pair of ports relayed to each other: P<->P+2 or P+1<->P+3.
// sides[0] faces the requester (LocalToRemote traffic arrives there).
type leg struct {
	sides [2]side
	// inKernel is set while the fast path forwards this leg: the latched
	// peers' datagrams then never reach the worker, and their last-seen
	// times come from the kernel's counters.
	inKernel atomic.Bool
	// overCeiling is set once the kernel forwarded this leg faster than
	// the packet ceiling: it stays in userspace from then on.
	overCeiling atomic.Bool
}

// Channel is one allocated relay channel: two independent legs, served by
// one worker.
type Channel struct {
	info    Info
	created time.Time
	grace   time.Duration
	sh      *shared   // the relay-wide rules and fast path; nil outside a Manager
	pool    *portPool // the pool its block came from (the range may change later)

	// mu is held for reading by the worker while it uses the sockets and
	// for writing by close, so a socket is never closed (and its number
	// reused) under a worker's system call.
	mu     sync.RWMutex
	closed bool

	legs     [2]leg                       // RTP, RTCP
	limiters [numDirections]*rate.Limiter // nil when unlimited
	// ppsInterval is the packet-rate ceiling per port as ns between
	// datagrams (0 = none), with ppsBurst ns of slack.
	ppsInterval, ppsBurst int64

	// lastForward is when the channel last forwarded a datagram, in
	// nanoseconds since created; 0 until the first one.
	lastForward atomic.Int64
	stats       counters

	timer *time.Timer
	// ending is set, under Manager.mu, by the one call that ends the
	// channel; the fast path reads it to leave the channel alone.
	ending atomic.Bool
}

// Info describes an allocated channel to the control plane.
type Info struct {
	ID         string        // unguessable XML Nmtoken
	LocalPort  int           // P: the requester sends RTP here, RTCP to P+1
	RemotePort int           // P+2: the other party sends RTP here, RTCP to P+3
	Expire     time.Duration // inactivity after which the channel dies
	MaxKbps    int           // per-direction limit; 0 = unlimited
}

// newChannel returns a channel on the four ports starting at base, with
// no socket yet (its Manager's transport opens them) and its limits set.
func newChannel(base int, info Info, grace time.Duration, sh *shared) *Channel {
	c := &Channel{info: info, created: time.Now(), grace: grace, sh: sh}
	for l := range c.legs {
		for s := range c.legs[l].sides {
			c.legs[l].sides[s] = side{ch: c, leg: l, side: s}
			c.legs[l].sides[s].budget.Store(probeBudget)
		}
	}
	for i, sd := range c.sides() {
		// Port layout: base+0 RTP local, +1 RTCP local, +2 RTP remote, +3 RTCP remote.
		sd.port = base + i
	}
	if info.MaxKbps > 0 {
		bytesPerSec := info.MaxKbps * 1000 / 8
		burst := max(bytesPerSec/2, 3*MaxDatagram)
		for d := range c.limiters {
			c.limiters[d] = rate.NewLimiter(rate.Limit(bytesPerSec), burst)
		}
	}
	return c
}

// sides lists the channel's four ports.
func (c *Channel) sides() [portsPerChannel]*side {
	return [portsPerChannel]*side{&c.legs[0].sides[0], &c.legs[1].sides[0], &c.legs[0].sides[1], &c.legs[1].sides[1]}
}

// newExpiryTimer creates the channel's (disarmed) expiry timer; expired is
// called from the timer's goroutine when the channel has been idle for
// Expire. armExpiry starts it once the channel is visible.
func (c *Channel) newExpiryTimer(expired func(*Channel)) {
	c.timer = time.AfterFunc(time.Duration(math.MaxInt64), func() { c.checkExpiry(expired) })
}

func (c *Channel) armExpiry() { c.timer.Reset(c.info.Expire) }

// checkExpiry runs when the expiry timer fires: it ends the channel if it
// has been idle for Expire, or re-arms the timer for the remaining time.
func (c *Channel) checkExpiry(expired func(*Channel)) {
	idle := c.idle()
	if fp := c.fastPath(); idle >= c.info.Expire && fp != nil && c.offloaded() {
		// The kernel may have forwarded since the last counter read.
		fp.refresh(expiryFresh)
		idle = c.idle()
	}
	if idle >= c.info.Expire {
		expired(c)
		return
	}
	c.timer.Reset(c.info.Expire - idle)
}

// idle is the time since the channel last forwarded a datagram (or since it
// was created, if it never did).
func (c *Channel) idle() time.Duration {
	return time.Since(c.created) - time.Duration(c.lastForward.Load())
}

// countQueued counts n datagrams of size bytes handed to the kernel to
// forward in direction dir: before sending, so whoever holds a relayed
// datagram sees it counted; what the kernel refuses is taken back with
// countUnsent.
func (c *Channel) countQueued(dir Direction, n, size int) {
	c.stats.packets[dir].Add(uint64(n))
	c.stats.bytes[dir].Add(uint64(size))
}

// countUnsent takes back n counted datagrams of size bytes that the
// kernel refused to send, and counts them as DropSendError.
func (c *Channel) countUnsent(dir Direction, n, size int) {
	c.stats.packets[dir].Add(^uint64(n - 1))
	c.stats.bytes[dir].Add(^uint64(size - 1))
	c.stats.dropped[DropSendError].Add(uint64(n))
}

// countUnsendable counts a datagram the transport cannot send at all.
func (c *Channel) countUnsendable() { c.stats.dropped[DropSendError].Add(1) }

// forwarded records that the channel forwarded at now (ns since its
// creation): it is alive.
func (c *Channel) forwarded(now int64) { c.lastForward.Store(now) }

// forwardable applies the rules every datagram from src arriving at in
// passes before it is forwarded to dst (size, latching, the other side
// latched and allowed to receive, the packet ceiling, the channel's and
// the relay's rate limits), counting a refused one by its reason. dst is
// nil while the other side of the leg has not latched. The caller holds
// c.mu for reading.
func (c *Channel) forwardable(in *side, src netip.AddrPort, p []byte, truncated bool, now int64, dst *netip.AddrPort) bool {
	if truncated || len(p) > MaxDatagram {
		c.stats.dropped[DropOversize].Add(1)
		return false
	}
	if reason, ok := c.admit(in, src, now); !ok {
		c.stats.dropped[reason].Add(1)
		return false
	}
	if dst == nil {
		c.stats.dropped[DropPeerNotLatched].Add(1)
		return false
	}
	if c.ppsInterval > 0 && !in.ceiling.allow(now, c.ppsInterval, c.ppsBurst) {
		c.stats.dropped[DropPacketCeiling].Add(1)
		return false
	}
	if lim := c.limiters[Direction(in.side)]; lim != nil && !lim.AllowN(time.Now(), len(p)) {
		c.stats.dropped[DropRateLimited].Add(1)
		return false
	}
	if c.sh != nil && c.sh.overTotal(len(p)) {
		c.stats.dropped[DropRateLimited].Add(1)
		return false
	}
	if reason, ok := c.sendable(&c.legs[in.leg].sides[1-in.side], *dst); !ok {
		c.stats.dropped[reason].Add(1)
		return false
	}
	return true
}

// fastPath is the Manager's fast path, or nil.
func (c *Channel) fastPath() *fastPath {
	if c.sh == nil {
		return nil
	}
	return c.sh.fp.Load()
}

// latchChanged hands a leg whose two sides are latched (again) to the
// fast path. Called once per latch, never per datagram.
func (c *Channel) latchChanged(in *side) {
	if fp := c.fastPath(); fp != nil && c.legs[in.leg].sides[1-in.side].latched.Load() != nil {
		fp.enqueue(c, in.leg)
	}
}

// countersFresh reports whether the kernel's counters are recent enough
// to decide that an offloaded peer is silent; if not, it asks for a read.
func (c *Channel) countersFresh() bool {
	fp := c.fastPath()
	if fp == nil || fp.fresh(relatchFresh) {
		return true
	}
	fp.requestPoll()
	return false
}

// setInKernel records whether the fast path forwards leg l now.
func (c *Channel) setInKernel(l int, in bool) { c.legs[l].inKernel.Store(in) }

// creditKernel credits what the kernel forwarded from the peer of side s
// of leg l since the last read (packets datagrams of bytes bytes) to the
// channel, as of now (ns since its creation): they count as forwarded,
// keep the peer's latch fresh and the channel alive.
func (c *Channel) creditKernel(l, s int, packets, bytes uint64, now int64) {
	dir := Direction(s)
	c.stats.packets[dir].Add(packets)
	c.stats.bytes[dir].Add(bytes)
	c.stats.offloaded[dir].Add(packets)
	c.legs[l].sides[s].lastSeen.Store(now)
	c.lastForward.Store(now)
}

// overCeilingInKernel reports whether the kernel forwarding packets
// datagrams on leg l within elapsed ns broke the packet ceiling for the
// first time: the leg is then marked to stay in userspace, whose ceiling
// holds datagram by datagram.
func (c *Channel) overCeilingInKernel(l int, packets uint64, elapsed int64) bool {
	return c.ppsInterval > 0 && int64(packets) > (elapsed+c.ppsBurst)/c.ppsInterval && !c.legs[l].overCeiling.Swap(true)
}

// offloaded reports whether any leg is in the kernel.
func (c *Channel) offloaded() bool {
	return c.legs[0].inKernel.Load() || c.legs[1].inKernel.Load()
}

// newAddrPort copies src to the heap; kept apart so the receive loop's src
// does not escape (one allocation per latch, none per datagram).
func newAddrPort(src netip.AddrPort) *netip.AddrPort {
	p := new(netip.AddrPort)
	*p = src
	return p
}

// close stops the channel: no more expiry, and its transport releases its
// ports (a socket's close also removes it from the worker's poller). It is
// idempotent.
func (c *Channel) close(tr transport) {
	c.timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	tr.closePorts(c)
}

// isLive reports whether c may still have legs offloaded: it is not
// ending and its ports are open.
func (c *Channel) isLive() bool {
	if c.ending.Load() {
		return false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return !c.closed
}

// Latched returns the addresses latched on the requester's and the other
// party's RTP ports (zero values when not latched yet).
func (c *Channel) Latched() (local, remote netip.AddrPort) {
	if p := c.legs[0].sides[0].latched.Load(); p != nil {
		local = *p
	}
	if p := c.legs[0].sides[1].latched.Load(); p != nil {
		remote = *p
	}
	return local, remote
}

// isAddrInUse reports whether err says a port is taken by another socket.
func isAddrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }

// orDefault resolves a setting where 0 means def and a negative value
// none (0): Config.MaxPPS, Config.SprayThreshold.
func orDefault(n, def int) int {
	switch {
	case n == 0:
		return def
	case n < 0:
		return 0
	}
	return n
}
