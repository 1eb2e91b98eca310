package turn

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Unauthenticated requests (no MESSAGE-INTEGRITY: every first Allocate,
// and everything a scanner or a reflector sends) are limited per source
// address before pion sees them, so that one source cannot keep pion
// busy. A request with a forged integrity attribute passes this limit:
// what bounds the bytes a forged source draws is the answer budget on the
// write side (amplification.go).
const (
	unauthPerSecond = 5
	unauthBurst     = 20
	maxSources      = 4096 // sources tracked; the table restarts when full
)

// limitedConn is the TURN server's UDP listening socket with the
// per-source limit applied to unauthenticated STUN requests, and the
// per-source answer budget (amplification.go) to unprotected answers.
type limitedConn struct {
	net.PacketConn
	srv    *Server
	budget *answerBudget

	mu      sync.Mutex
	sources map[netip.Addr]*rate.Limiter
}

func newLimitedConn(pc net.PacketConn, srv *Server) *limitedConn {
	return &limitedConn{PacketConn: pc, srv: srv, budget: newAnswerBudget(answerAllowance(srv.cfg.Realm)), sources: map[netip.Addr]*rate.Limiter{}}
}

func (c *limitedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.PacketConn.ReadFrom(p)
		if err != nil || !isSTUN(p[:n]) {
			return n, from, err
		}
		if src, ok := addrPortOf(from); ok {
			c.budget.received(src.Addr(), n, time.Now())
		}
		if !unauthenticated(p[:n]) || c.allow(from) {
			return n, from, err
		}
		c.srv.stats.refuse(RefusedRateLimit)
	}
}

// WriteTo sends p to to, unless p is an answer without MESSAGE-INTEGRITY
// that to's answer budget cannot pay: that one is dropped (reported sent,
// as a lost datagram would be).
func (c *limitedConn) WriteTo(p []byte, to net.Addr) (int, error) {
	if unprotectedAnswer(p) {
		if dst, ok := addrPortOf(to); ok && !c.budget.spend(dst.Addr(), len(p), time.Now()) {
			c.srv.stats.refuse(RefusedAmplification)
			return len(p), nil
		}
	}
	return c.PacketConn.WriteTo(p, to)
}

func (c *limitedConn) allow(from net.Addr) bool {
	u, ok := from.(*net.UDPAddr)
	if !ok {
		return true
	}
	a := sourceKey(u.AddrPort().Addr())
	c.mu.Lock()
	defer c.mu.Unlock()
	lim := c.sources[a]
	if lim == nil {
		if len(c.sources) >= maxSources {
			clear(c.sources)
		}
		lim = rate.NewLimiter(unauthPerSecond, unauthBurst)
		c.sources[a] = lim
	}
	return lim.AllowN(time.Now(), 1)
}

const stunHeader = 20

// isSTUN reports whether b starts like a STUN message (the first two bits
// zero, the magic cookie). ChannelData and anything that is not STUN
// fail: pion discards what it cannot parse without answering.
func isSTUN(b []byte) bool {
	const cookie = 0x2112A442
	return len(b) >= stunHeader && b[0]>>6 == 0 && binary.BigEndian.Uint32(b[4:8]) == cookie
}

// stunClass is the class bits of a STUN message's type: 0 request,
// 0x0010 indication, 0x0100 success, 0x0110 error.
func stunClass(b []byte) uint16 { return binary.BigEndian.Uint16(b[0:2]) & 0x0110 }

// hasIntegrity reports whether the STUN message b has a
// MESSAGE-INTEGRITY(-SHA256) attribute.
func hasIntegrity(b []byte) bool {
	for off := stunHeader; off+4 <= len(b); {
		attr, size := binary.BigEndian.Uint16(b[off:]), int(binary.BigEndian.Uint16(b[off+2:]))
		if attr == 0x0008 || attr == 0x001C {
			return true
		}
		off += 4 + (size+3)&^3
	}
	return false
}

// unauthenticated reports whether b is a STUN request without a
// MESSAGE-INTEGRITY(-SHA256) attribute (indications are not answered).
func unauthenticated(b []byte) bool {
	return isSTUN(b) && stunClass(b) == 0 && !hasIntegrity(b)
}

// unprotectedAnswer reports whether b is a STUN response (success or
// error) without MESSAGE-INTEGRITY(-SHA256): an answer anyone can draw.
func unprotectedAnswer(b []byte) bool {
	return isSTUN(b) && stunClass(b)&0x0100 != 0 && !hasIntegrity(b)
}
