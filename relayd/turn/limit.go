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
// address before pion sees them: pion answers each with a 401 carrying a
// nonce and the realm, a little larger than a bare request, so without a
// limit a forged source could use the relay as a (small) amplifier.
const (
	unauthPerSecond = 5
	unauthBurst     = 20
	maxSources      = 4096 // sources tracked; the table restarts when full
)

// limitedConn is the TURN server's listening socket with the per-source
// limit applied to unauthenticated STUN requests.
type limitedConn struct {
	net.PacketConn
	srv *Server

	mu      sync.Mutex
	sources map[netip.Addr]*rate.Limiter
}

func (c *limitedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.PacketConn.ReadFrom(p)
		if err != nil || !unauthenticated(p[:n]) || c.allow(from) {
			return n, from, err
		}
		c.srv.stats.refuse(RefusedRateLimit)
	}
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

// unauthenticated reports whether b is a STUN request without a
// MESSAGE-INTEGRITY(-SHA256) attribute. ChannelData and anything that is
// not STUN pass: pion discards what it cannot parse without answering.
func unauthenticated(b []byte) bool {
	const header, cookie = 20, 0x2112A442
	if len(b) < header || b[0]>>6 != 0 || binary.BigEndian.Uint32(b[4:8]) != cookie {
		return false
	}
	if typ := binary.BigEndian.Uint16(b[0:2]); typ&0x0110 != 0 {
		return false // not a request: indications are not answered
	}
	for off := header; off+4 <= len(b); {
		attr, size := binary.BigEndian.Uint16(b[off:]), int(binary.BigEndian.Uint16(b[off+2:]))
		if attr == 0x0008 || attr == 0x001C {
			return false
		}
		off += 4 + (size+3)&^3
	}
	return true
}
