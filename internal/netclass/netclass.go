// Package netclass judges how far an IP address reaches — the Internet, a
// private network, this host, or nowhere a relay may send — after
// bringing every spelling of an address to one form. The data plane's
// peer rule and the choice of the address a relay advertises both ask it,
// so that a relay never disagrees with itself about what is private; a
// new transport (TURN peers) asks it too.
//
// IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64
// (64:ff9b::/96) and 6to4 (2002::/16) addresses are judged as the IPv4
// address they carry: an attacker cannot reach loopback or the donor's
// LAN by spelling it in IPv6 (the canonicalisation bypasses of TURN
// servers' peer ACLs).
package netclass

import "net/netip"

// Class is how far an address reaches; a larger class reaches further.
type Class int

const (
	Forbidden Class = iota // unspecified, multicast, broadcast, reserved: never a peer
	Loopback               // this host only
	Private                // a private network: RFC 1918, CGNAT, link-local, ULA, documentation, benchmarking
	Public                 // the Internet
)

var classNames = [...]string{"forbidden", "loopback", "private", "public"}

func (c Class) String() string {
	if c < 0 || int(c) >= len(classNames) {
		return "invalid"
	}
	return classNames[c]
}

var (
	nat64         = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour     = netip.MustParsePrefix("2002::/16")
	v4Compatible  = netip.MustParsePrefix("::/96")
	thisNetwork   = netip.MustParsePrefix("0.0.0.0/8")
	reservedV4    = netip.MustParsePrefix("240.0.0.0/4") // includes 255.255.255.255
	privateRanges = []netip.Prefix{
		netip.MustParsePrefix("100.64.0.0/10"),   // CGNAT (RFC 6598)
		netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
		netip.MustParsePrefix("192.0.2.0/24"),    // documentation (RFC 5737)
		netip.MustParsePrefix("198.51.100.0/24"), //
		netip.MustParsePrefix("203.0.113.0/24"),  //
		netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking (RFC 2544)
		netip.MustParsePrefix("2001:db8::/32"),   // documentation (RFC 3849)
		// Local-use NAT64 (RFC 8215): translated by the site's own NAT64
		// into IPv4 addresses of any class, at a position its prefix
		// length decides; never routed on the Internet.
		netip.MustParsePrefix("64:ff9b:1::/48"),
	}
)

// Canonical returns the address a is judged as: IPv4 for every IPv6
// spelling that carries an IPv4 address, a itself otherwise (zone
// dropped).
func Canonical(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if !a.Is6() {
		return a
	}
	b := a.As16()
	a = netip.AddrFrom16(b) // without its zone
	switch {
	case nat64.Contains(a), v4Compatible.Contains(a) && !a.IsUnspecified() && !a.IsLoopback():
		return netip.AddrFrom4([4]byte(b[12:16]))
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6]))
	}
	return a
}

// Of says how far a reaches.
func Of(a netip.Addr) Class {
	a = Canonical(a)
	switch {
	case !a.IsValid(), a.IsUnspecified(), a.IsMulticast(), a.IsInterfaceLocalMulticast(), a.IsLinkLocalMulticast():
		return Forbidden
	case a.Is4() && (thisNetwork.Contains(a) || reservedV4.Contains(a)):
		return Forbidden
	case a.IsLoopback():
		return Loopback
	case a.IsPrivate(), a.IsLinkLocalUnicast():
		return Private
	}
	for _, p := range privateRanges {
		if p.Contains(a) {
			return Private
		}
	}
	return Public
}
