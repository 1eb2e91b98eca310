package turn

import (
	"net"
	"net/netip"
	"strings"

	pionturn "github.com/pion/turn/v5"
)

// events is what the server hears of pion's allocations: failed password
// checks (counted as auth refusals), and the client address and
// permissions of each allocation for the listing (Allocations).
func (s *Server) events() pionturn.EventHandler {
	return pionturn.EventHandler{
		// pion checks the password (MESSAGE-INTEGRITY) after
		// authenticate; a failed check reaches us only here.
		OnAuth: func(_, _ net.Addr, _, _, _, _ string, verdict bool) {
			if !verdict {
				s.stats.refuse(RefusedAuth)
			}
		},
		OnAllocationCreated: func(src, dst net.Addr, protocol, _, _ string, relayed net.Addr, _ int) {
			r, okR := netAddrPort(relayed)
			c, okC := netAddrPort(src)
			if okR && okC {
				s.allocs.created(r, c, s.transportOf(protocol, dst))
			}
		},
		OnPermissionCreated: func(_, _ net.Addr, _, _, _ string, relayed net.Addr, peer net.IP) {
			s.permissionEvent(relayed, peer, true)
		},
		OnPermissionDeleted: func(_, _ net.Addr, _, _, _ string, relayed net.Addr, peer net.IP) {
			s.permissionEvent(relayed, peer, false)
		},
	}
}

func (s *Server) permissionEvent(relayed net.Addr, peer net.IP, on bool) {
	r, ok := netAddrPort(relayed)
	p, okP := netip.AddrFromSlice(peer)
	if ok && okP {
		s.allocs.permit(r, p, on)
	}
}

// transportOf names how the client reaches the server: pion says "UDP"
// or "TCP"; TCP to the TLS listener's address is TLS.
func (s *Server) transportOf(protocol string, dst net.Addr) string {
	if d, ok := netAddrPort(dst); ok && s.tlsAddr.IsValid() && d == s.tlsAddr {
		return "tls"
	}
	return strings.ToLower(protocol)
}

// netAddrPort converts the UDP and TCP addresses pion's events carry.
func netAddrPort(a net.Addr) (netip.AddrPort, bool) {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case *net.TCPAddr:
		ap = a.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.IsValid()
}
