package channel

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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
	fd        int // non-blocking UDP socket; -1 once closed
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
	worker  *worker
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

	timer  *time.Timer
	ending bool // guarded by Manager.mu
}

// Info describes an allocated channel to the control plane.
type Info struct {
	ID         string        // unguessable XML Nmtoken
	LocalPort  int           // P: the requester sends RTP here, RTCP to P+1
	RemotePort int           // P+2: the other party sends RTP here, RTCP to P+3
	Expire     time.Duration // inactivity after which the channel dies
	MaxKbps    int           // per-direction limit; 0 = unlimited
}

// openChannel binds the four ports starting at base, marks them for
// expedited forwarding (DSCP EF, as voice should be) and sizes their
// buffers to bufSize (0 = kernel default). On failure nothing stays open.
// A steered channel binds nothing: its ports reach the workers' steered
// sockets.
func openChannel(listen netip.Addr, base int, info Info, grace time.Duration, bufSize int, steered bool) (*Channel, error) {
	c := &Channel{info: info, created: time.Now(), grace: grace}
	for l := range c.legs {
		for s := range c.legs[l].sides {
			c.legs[l].sides[s] = side{ch: c, leg: l, side: s, fd: -1}
			c.legs[l].sides[s].budget.Store(probeBudget)
		}
	}
	for i := range portsPerChannel {
		// Port layout: base+0 RTP local, +1 RTCP local, +2 RTP remote, +3 RTCP remote.
		sd := &c.legs[i%2].sides[i/2]
		sd.port = base + i
		if steered {
			continue // the workers' steered sockets receive for it (steered.go)
		}
		fd, err := kernel.OpenUDP(netip.AddrPortFrom(listen, uint16(sd.port)))
		if err != nil {
			c.closeSockets()
			return nil, fmt.Errorf("bind relay port %d: %w", sd.port, err)
		}
		sd.fd = fd
		// Both are best effort: a relay without them still relays.
		kernel.SetDSCP(fd, listen.Is6() && !listen.Is4In6(), kernel.DSCPExpeditedForwarding)
		if bufSize > 0 {
			kernel.SetBuffers(fd, bufSize, bufSize)
		}
	}
	if info.MaxKbps > 0 {
		bytesPerSec := info.MaxKbps * 1000 / 8
		burst := max(bytesPerSec/2, 3*MaxDatagram)
		for d := range c.limiters {
			c.limiters[d] = rate.NewLimiter(rate.Limit(bytesPerSec), burst)
		}
	}
	return c, nil
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

// relay reads the datagrams waiting on in (one recvmmsg batch) and
// forwards those it accepts to the party latched on the other side of the
// leg (one sendmmsg). The caller holds c.mu for reading and checked that
// the channel is open.
func (c *Channel) relay(in *side, b *batches) {
	n, err := b.recv.Recv(in.fd)
	if err != nil || n == 0 {
		// A pending socket error (an ICMP unreachable from a peer) is
		// consumed by the failed read; the port stays usable.
		return
	}
	out := &c.legs[in.leg].sides[1-in.side]
	if n == b.recv.Size() && !in.hot {
		c.growBuffers(in, out)
	}
	dir := Direction(in.side)
	now := int64(time.Since(c.created))
	dst := out.latched.Load() // only this worker latches out: stable for the batch
	if dst != nil {
		b.send.Reset(*dst)
	}
	var queuedBytes int
	for i := range n {
		p, src, truncated := b.recv.Packet(i)
		if !c.forwardable(in, src, p, truncated, now, dst) {
			continue
		}
		b.lens[b.send.Len()] = len(p)
		b.send.Add(p)
		queuedBytes += len(p)
	}
	queued := b.send.Len()
	if queued == 0 {
		return
	}
	// Counted before sending, so whoever holds a relayed datagram sees it
	// counted; what the kernel refuses is taken back below.
	c.stats.packets[dir].Add(uint64(queued))
	c.stats.bytes[dir].Add(uint64(queuedBytes))
	var sent int
	if b.gso && queued > 1 && !out.noGSO {
		// A hot flow: the batch's equal-size runs cross the UDP and IP
		// layers once each.
		var msgs int
		var err error
		sent, msgs, err = b.send.SendSegmented(out.fd)
		if errors.Is(err, kernel.ErrNoSegmentation) {
			out.noGSO = true // this destination's route cannot take it: stop asking
		}
		if sent > msgs {
			b.gsoSaved.Add(uint64(sent - msgs))
		}
	} else {
		sent, _ = b.send.Send(out.fd)
	}
	if sent < queued {
		unsent := 0
		for _, l := range b.lens[sent:queued] {
			unsent += l
		}
		c.stats.packets[dir].Add(^uint64(queued - sent - 1))
		c.stats.bytes[dir].Add(^uint64(unsent - 1))
		c.stats.dropped[DropSendError].Add(uint64(queued - sent))
	}
	if sent > 0 {
		c.lastForward.Store(now)
	}
}

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
	if c.worker.m.overTotal(len(p)) {
		c.stats.dropped[DropRateLimited].Add(1)
		return false
	}
	if reason, ok := c.sendable(&c.legs[in.leg].sides[1-in.side], *dst); !ok {
		c.stats.dropped[reason].Add(1)
		return false
	}
	return true
}

// growBuffers gives a port that filled a whole receive batch, and the port
// it forwards from, buffers for a hot flow: the range-wide size (as small
// as 64 KiB for a large range) overflows in a burst of such a flow while
// the relay serves other ports. Best effort, once per port.
func (c *Channel) growBuffers(in, out *side) {
	in.hot = true
	rcv, _, err1 := kernel.SetBuffers(in.fd, kernel.HotFlowBuffer, 0)
	_, snd, err2 := kernel.SetBuffers(out.fd, 0, kernel.HotFlowBuffer)
	if c.worker != nil {
		c.worker.m.log.Debug("hot flow: port buffers grown", "channel", c.info.ID, "port", in.port,
			"rcvbuf", rcv, "out_port", out.port, "sndbuf", snd, "err", errors.Join(err1, err2))
	}
}

// fastPath is the Manager's fast path, or nil.
func (c *Channel) fastPath() *fastPath {
	if c.worker == nil {
		return nil
	}
	return c.worker.m.fp.Load()
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

// close stops the channel: no more expiry, sockets closed (which also
// removes them from the worker's poller). It is idempotent.
func (c *Channel) close() {
	c.timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	// The kernel counts datagrams it could not queue (receive buffer full)
	// and those a shield rejected; read them before the sockets go.
	for _, s := range c.sides() {
		if s.shield.up {
			c.creditShield(s)
		}
		if n, err := kernel.Drops(s.fd); err == nil {
			c.stats.kernelDrops.Add(uint64(n - s.shield.credited))
		}
	}
	c.closeSockets()
}

func (c *Channel) closeSockets() {
	for _, s := range c.sides() {
		if s.fd >= 0 {
			unix.Close(s.fd)
			s.fd = -1
		}
	}
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
