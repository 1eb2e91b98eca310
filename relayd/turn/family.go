package turn

import (
	"errors"
	"fmt"
	"net/netip"
)

// Address families (RFC 6156, RFC 8656 §7.2): an allocation's relayed
// address is IPv4 or IPv6, whatever the family the client reaches the
// server over, so an IPv6-only client (a phone on an IPv6-only mobile
// network) gets an IPv4 relayed address and reaches IPv4 peers through
// the relay. pion parses REQUESTED-ADDRESS-FAMILY and hands the family to
// allocate as "udp4" or "udp6"; the relayed socket is a relay port of
// that family (channel.Manager.OpenRelayPort), and its host is the
// relay's public address of that family.
//
// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §7.1, dual allocation) is not
// implemented by pion: it is a comprehension-optional attribute (0x8000),
// so pion ignores it and the client gets one relayed address, of the
// family REQUESTED-ADDRESS-FAMILY names or the default below, as RFC 8656
// allows a server that does not do dual allocation. A client wanting both
// families makes two allocations.

// strictFamily decides pion's default family for an Allocate without
// REQUESTED-ADDRESS-FAMILY. Where the data plane serves IPv4 relay ports
// the default is IPv4, as RFC 6156 and RFC 8656 say: that is what lets a
// client connected over IPv6 that names no family (libwebrtc sends none)
// reach the IPv4 peers that are most peers; clients wanting an IPv6
// relayed address ask for it. pion's own default follows the family the
// client came over "for browser compatibility": it is kept only where the
// data plane serves IPv6 alone (listen_address a specific IPv6 address),
// where an IPv4 default could only fail.
func strictFamily(dp DataPlane) bool { return dp.ServesFamily("udp4") }

var (
	errNoPublicAddress = errors.New("public address not known yet")
	errFamilyNotServed = errors.New("relayed address family not served")
)

// relayedHost is the host of a relayed address of network ("udp4" or
// "udp6"): the relay's public address of that family. Without one the
// allocation is refused, counted as no_address while the relay knows no
// public address at all, as addr_family when it knows none of this
// family or its listen address serves the other family only. pion
// answers either refusal with 508 (Insufficient Capacity): it maps every
// error of the relayed-address generator to that code, not to 440.
func (s *Server) relayedHost(network string) (netip.Addr, error) {
	if !s.cfg.DataPlane.ServesFamily(network) {
		s.stats.refuse(RefusedAddrFamily)
		return netip.Addr{}, fmt.Errorf("%w: %s on the relay's listen address", errFamilyNotServed, network)
	}
	v4 := s.cfg.PublicAddr().Unmap()
	var v6 netip.Addr
	if s.cfg.PublicAddr6 != nil {
		v6 = s.cfg.PublicAddr6()
	}
	if !v6.Is6() || v6.Is4In6() {
		v6 = netip.Addr{}
	}
	if v4.Is6() { // an IPv6-only host advertises its IPv6 address
		v4, v6 = netip.Addr{}, cmpOr(v6, v4)
	}
	host := v4
	if network == "udp6" {
		host = v6
	}
	switch {
	case host.IsValid():
		return host, nil
	case !v4.IsValid() && !v6.IsValid():
		s.stats.refuse(RefusedNoAddress)
		return netip.Addr{}, errNoPublicAddress
	}
	s.stats.refuse(RefusedAddrFamily)
	return netip.Addr{}, fmt.Errorf("%w: no public address for %s", errFamilyNotServed, network)
}

// cmpOr returns a when valid, else b.
func cmpOr(a, b netip.Addr) netip.Addr {
	if a.IsValid() {
		return a
	}
	return b
}
