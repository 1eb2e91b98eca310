package channel

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"
)

// MaxDatagram is the largest datagram the relay forwards. It covers a full
// 1500-byte Ethernet frame's payload and more; larger datagrams are dropped
// and counted as DropOversize, never truncated.
const MaxDatagram = 1500

// side is one port of a leg and the party latched on it.
type side struct {
	conn *net.UDPConn
	// latched is the source this port accepts and the destination traffic
	// for this side goes to; nil until the first datagram arrives. Only the
	// side's own reader stores it.
	latched atomic.Pointer[netip.AddrPort]
	// lastSeen is when the latched source last sent, in nanoseconds since the
	// channel's creation (monotonic).
	lastSeen atomic.Int64
}

// leg is a pair of ports relayed to each other: P<->P+2 or P+1<->P+3.
// sides[0] faces the requester (LocalToRemote traffic arrives there).
type leg struct {
	sides [2]side
}

// Channel is one allocated relay channel: two independent legs.
type Channel struct {
	info    Info
	created time.Time
	grace   time.Duration

	legs     [2]leg                       // RTP, RTCP
	limiters [numDirections]*rate.Limiter // nil when unlimited

	// lastForward is when the channel last forwarded a datagram, in
	// nanoseconds since created; 0 until the first one.
	lastForward atomic.Int64
	stats       counters

	timer   *time.Timer
	ending  bool // guarded by Manager.mu
	readers sync.WaitGroup
	once    sync.Once
}

// Info describes an allocated channel to the control plane.
type Info struct {
	ID         string        // unguessable XML Nmtoken
	LocalPort  int           // P: the requester sends RTP here, RTCP to P+1
	RemotePort int           // P+2: the other party sends RTP here, RTCP to P+3
	Expire     time.Duration // inactivity after which the channel dies
	MaxKbps    int           // per-direction limit; 0 = unlimited
}

// openChannel binds the four ports starting at base. On failure nothing
// stays open.
func openChannel(listen netip.Addr, base int, info Info, grace time.Duration) (*Channel, error) {
	c := &Channel{info: info, created: time.Now(), grace: grace}
	network := "udp4"
	if listen.Is6() && !listen.Is4In6() {
		network = "udp6"
	}
	for i := range portsPerChannel {
		// Port layout: base+0 RTP local, +1 RTCP local, +2 RTP remote, +3 RTCP remote.
		l, s := i%2, i/2
		addr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(listen, uint16(base+i)))
		conn, err := net.ListenUDP(network, addr)
		if err != nil {
			c.closeSockets()
			return nil, fmt.Errorf("bind relay port %d: %w", base+i, err)
		}
		c.legs[l].sides[s].conn = conn
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

// start launches one reader per port and the expiry timer; expired is called
// (once, from the timer's goroutine) when the channel has been idle too long.
func (c *Channel) start(expired func(*Channel)) {
	for l := range c.legs {
		for s := range c.legs[l].sides {
			c.readers.Add(1)
			go c.relay(&c.legs[l], s)
		}
	}
	// Arm only after c.timer is set: checkExpiry uses it.
	c.timer = time.AfterFunc(time.Duration(math.MaxInt64), func() { c.checkExpiry(expired) })
	c.timer.Reset(c.info.Expire)
}

// checkExpiry runs when the expiry timer fires: it ends the channel if it
// has been idle for Expire, or re-arms the timer for the remaining time.
func (c *Channel) checkExpiry(expired func(*Channel)) {
	idle := c.idle()
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

// relay reads datagrams arriving at leg.sides[from] and forwards them to the
// party latched on the other side. It returns when the socket is closed.
func (c *Channel) relay(l *leg, from int) {
	defer c.readers.Done()
	in, out := &l.sides[from], &l.sides[1-from]
	dir := Direction(from)
	// One byte more than MaxDatagram, plus MSG_TRUNC, tells oversize apart.
	buf := make([]byte, MaxDatagram+1)
	for {
		n, _, flags, src, err := in.conn.ReadMsgUDPAddrPort(buf, nil)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient receive errors (e.g. ICMP-reported unreachability
			// on Linux) are not fatal for a relay port.
			continue
		}
		if n > MaxDatagram || flags&syscall.MSG_TRUNC != 0 {
			c.stats.dropped[DropOversize].Add(1)
			continue
		}
		now := int64(time.Since(c.created))
		if !c.admit(in, src, now) {
			c.stats.dropped[DropForeignSource].Add(1)
			continue
		}
		dst := out.latched.Load()
		if dst == nil {
			c.stats.dropped[DropPeerNotLatched].Add(1)
			continue
		}
		if lim := c.limiters[dir]; lim != nil && !lim.AllowN(time.Now(), n) {
			c.stats.dropped[DropRateLimited].Add(1)
			continue
		}
		if _, err := out.conn.WriteToUDPAddrPort(buf[:n], *dst); err != nil {
			c.stats.dropped[DropSendError].Add(1)
			continue
		}
		c.stats.packets[dir].Add(1)
		c.stats.bytes[dir].Add(uint64(n))
		c.lastForward.Store(now)
	}
}

// admit applies the latching rule to a datagram from src arriving at in at
// time now: the first source latches; the latched source is always
// accepted; another source takes over only once the latched one has been
// silent for longer than the grace period.
func (c *Channel) admit(in *side, src netip.AddrPort, now int64) bool {
	cur := in.latched.Load()
	switch {
	case cur != nil && *cur == src:
	case cur == nil:
		in.latched.Store(newAddrPort(src))
	case now-in.lastSeen.Load() > int64(c.grace):
		in.latched.Store(newAddrPort(src))
		c.stats.relatched.Add(1)
	default:
		return false
	}
	in.lastSeen.Store(now)
	return true
}

// newAddrPort copies src to the heap; kept apart so the receive loop's src
// does not escape (one allocation per latch, none per datagram).
func newAddrPort(src netip.AddrPort) *netip.AddrPort {
	p := new(netip.AddrPort)
	*p = src
	return p
}

// close stops the channel: no more expiry, sockets closed, readers gone.
// It is idempotent and returns only when all four ports are released.
func (c *Channel) close() {
	c.once.Do(func() {
		if c.timer != nil {
			c.timer.Stop()
		}
		c.closeSockets()
		c.readers.Wait()
	})
}

func (c *Channel) closeSockets() {
	for l := range c.legs {
		for s := range c.legs[l].sides {
			if conn := c.legs[l].sides[s].conn; conn != nil {
				conn.Close()
			}
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
