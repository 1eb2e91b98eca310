package channel

import (
	"net/netip"
	"slices"

	"github.com/jnrelay/jnrelay/kernel"
)

// The peer rule: which source addresses a relay port may latch, and so
// which addresses the relay may ever send to. A relay on the Internet
// must not be made to send a call's media to itself (a forwarding loop),
// to loopback or unspecified addresses (CVE-2020-26262 and its kin in
// TURN servers), to multicast or broadcast addresses, or — when it has a
// public address — into private networks, the donor's own LAN among them.
//
// Addresses are judged after every spelling is brought to one form:
// IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64
// (64:ff9b::/96) and 6to4 (2002::/16) addresses are judged as the IPv4
// address they carry.

// addrClass is how far an address reaches.
type addrClass int

const (
	classForbidden addrClass = iota // unspecified, multicast, broadcast, reserved: never a peer
	classLoopback                   // this host only
	classPrivate                    // a private network: RFC 1918, CGNAT, link-local, ULA, documentation, benchmarking
	classPublic                     // the Internet
)

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
	}
)

// canonical returns the address a judges as: IPv4 for every IPv6
// spelling that carries an IPv4 address, a itself otherwise (zone
// dropped).
func canonical(a netip.Addr) netip.Addr {
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

// classify says how far a reaches.
func classify(a netip.Addr) addrClass {
	a = canonical(a)
	switch {
	case !a.IsValid(), a.IsUnspecified(), a.IsMulticast(), a.IsInterfaceLocalMulticast(), a.IsLinkLocalMulticast():
		return classForbidden
	case a.Is4() && (thisNetwork.Contains(a) || reservedV4.Contains(a)):
		return classForbidden
	case a.IsLoopback():
		return classLoopback
	case a.IsPrivate(), a.IsLinkLocalUnicast():
		return classPrivate
	}
	for _, p := range privateRanges {
		if p.Contains(a) {
			return classPrivate
		}
	}
	return classPublic
}

// peerRule decides which sources a relay port may latch. It is immutable;
// the Manager swaps in a new one when its addresses change.
type peerRule struct {
	// reach is the class of the relay's own advertised address: peers
	// must be at least as far out (a public relay serves the Internet
	// only; a relay on a private network serves it and the Internet; a
	// relay on loopback — a test, a demo — serves its own host too).
	reach addrClass
	own   map[netip.Addr]bool // the host's own addresses, canonical
	allow []netip.Prefix      // sources allowed whatever their class (own addresses included)
}

// newPeerRule builds the rule for a relay advertising public (invalid
// when unknown) and listening on listen, with the host's addresses own.
func newPeerRule(public, listen netip.Addr, own []netip.Addr, allow []netip.Prefix) *peerRule {
	r := &peerRule{own: make(map[netip.Addr]bool, len(own)+2), allow: allow}
	for _, a := range own {
		r.own[canonical(a)] = true
	}
	if listen.IsValid() && !listen.IsUnspecified() {
		r.own[canonical(listen)] = true
	}
	switch {
	case public.IsValid():
		r.reach = classify(public)
		r.own[canonical(public)] = true
	case listen.IsValid() && !listen.IsUnspecified():
		r.reach = classify(listen)
	default:
		r.reach = classPrivate // not known yet: no loopback, no own addresses
	}
	if r.reach == classForbidden {
		r.reach = classPrivate
	}
	return r
}

// permits reports whether a datagram from src may latch a relay port;
// relayPort says whether a port is one of the relay's live ports.
func (r *peerRule) permits(src netip.AddrPort, relayPort func(int) bool) bool {
	a := canonical(src.Addr())
	class := classify(a)
	if class == classForbidden || src.Port() == 0 {
		return false
	}
	if (r.own[a] || class == classLoopback) && relayPort(int(src.Port())) {
		return false // the relay itself: a channel forwarding to itself or another
	}
	if slices.ContainsFunc(r.allow, func(p netip.Prefix) bool { return p.Contains(a) }) {
		return true
	}
	if r.own[a] && r.reach != classLoopback {
		return false
	}
	return class >= r.reach
}

// refreshPeers rebuilds the peer rule from the relay's current addresses.
func (m *Manager) refreshPeers() {
	var public netip.Addr
	if m.cfg.PublicAddr != nil {
		public = m.cfg.PublicAddr()
	}
	m.mu.Lock()
	allow := m.cfg.AllowPeers
	m.mu.Unlock()
	own, _ := kernel.HostAddrs() // unreadable: the listen and public addresses still count as own
	m.sh.peers.Store(newPeerRule(public, m.sh.listen, own, allow))
}
