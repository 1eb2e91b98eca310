package channel

import (
	"net/netip"
	"slices"

	"github.com/jnrelay/jnrelay/internal/netclass"
	"github.com/jnrelay/jnrelay/kernel"
)

// The peer rule: which source addresses a relay port may latch, and so
// which addresses the relay may ever send to. A relay on the Internet
// must not be made to send a call's media to itself (a forwarding loop),
// to loopback or unspecified addresses (CVE-2020-26262 and its kin in
// TURN servers), to multicast or broadcast addresses, or — when it has a
// public address — into private networks, the donor's own LAN among them.
//
// Addresses are judged by internal/netclass, after every spelling is
// brought to one form: IPv4-mapped, IPv4-compatible, NAT64 and 6to4
// addresses are judged as the IPv4 address they carry.

// peerRule decides which sources a relay port may latch. It is immutable;
// the Manager swaps in a new one when its addresses change.
type peerRule struct {
	// reach is the class of the relay's own advertised address: peers
	// must be at least as far out (a public relay serves the Internet
	// only; a relay on a private network serves it and the Internet; a
	// relay on loopback — a test, a demo — serves its own host too).
	reach netclass.Class
	own   map[netip.Addr]bool // the host's own addresses, canonical
	allow []netip.Prefix      // sources allowed whatever their class (own addresses included)
}

// newPeerRule builds the rule for a relay advertising public (invalid
// when unknown) and listening on listen, with the host's addresses own.
func newPeerRule(public, listen netip.Addr, own []netip.Addr, allow []netip.Prefix) *peerRule {
	r := &peerRule{own: make(map[netip.Addr]bool, len(own)+2), allow: allow}
	for _, a := range own {
		r.own[netclass.Canonical(a)] = true
	}
	if listen.IsValid() && !listen.IsUnspecified() {
		r.own[netclass.Canonical(listen)] = true
	}
	switch {
	case public.IsValid():
		r.reach = netclass.Of(public)
		r.own[netclass.Canonical(public)] = true
	case listen.IsValid() && !listen.IsUnspecified():
		r.reach = netclass.Of(listen)
	default:
		r.reach = netclass.Private // not known yet: no loopback, no own addresses
	}
	if r.reach == netclass.Forbidden {
		r.reach = netclass.Private
	}
	return r
}

// permits reports whether a datagram from src may latch a relay port;
// relayPort says whether a port is one of the relay's live ports.
func (r *peerRule) permits(src netip.AddrPort, relayPort func(int) bool) bool {
	a := netclass.Canonical(src.Addr())
	class := netclass.Of(a)
	if class == netclass.Forbidden || src.Port() == 0 {
		return false
	}
	if (r.own[a] || class == netclass.Loopback) && relayPort(int(src.Port())) {
		return false // the relay itself: a channel forwarding to itself or another
	}
	if slices.ContainsFunc(r.allow, func(p netip.Prefix) bool { return p.Contains(a) }) {
		return true
	}
	if r.own[a] && r.reach != netclass.Loopback {
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
	if m.cfg.PublicAddr6 != nil {
		if a := m.cfg.PublicAddr6(); a.IsValid() {
			own = append(own, a)
		}
	}
	m.sh.peers.Store(newPeerRule(public, m.sh.listen, own, allow))
}
