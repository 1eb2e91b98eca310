package turn

import "net/netip"

// sourceKey is what per-source limits count a client address against:
// the IPv4 address (an IPv4 client on a dual-stack socket arrives as
// ::ffff:a.b.c.d and counts as a.b.c.d), or the IPv6 /64, which one
// subscriber holds whole and can send from any address of (the STUN
// server counts sources the same way).
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}
