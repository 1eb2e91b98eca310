package turn

import "net/netip"

// sourceKey is what one source counts as in the per-source tables: its
// IPv4 address, or its IPv6 /64 (what one subscriber holds, as the STUN
// server counts).
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}
