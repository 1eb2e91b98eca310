// Package publicaddr chooses the address a relay advertises as the host of
// its channels when none is configured: the address peers on the Internet
// reach it at, as far as the host's own interfaces can tell.
package publicaddr

import (
	"fmt"
	"net/netip"

	"github.com/jnrelay/jnrelay/kernel"
)

// Choose picks the best advertised address among a host's addresses:
// a public IPv4 address, else a public IPv6 address, else a private one
// (the relay is then behind NAT and only reachable from its own network;
// public reports false so the caller can warn). Loopback, link-local,
// multicast and unspecified addresses are never chosen.
func Choose(addrs []netip.Addr) (addr netip.Addr, public bool) {
	var v6, private netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case !a.IsGlobalUnicast():
			continue // loopback, link-local, multicast, unspecified
		case a.IsPrivate() || isSharedOrDocumentation(a):
			if !private.IsValid() {
				private = a
			}
		case a.Is4():
			return a, true
		case !v6.IsValid():
			v6 = a
		}
	}
	if v6.IsValid() {
		return v6, true
	}
	return private, false
}

// shared is RFC 6598 carrier-grade NAT space: not reachable from outside.
var shared = netip.MustParsePrefix("100.64.0.0/10")

// documentation prefixes (RFC 5737, RFC 3849) are treated as private: they
// never route on the Internet. Tests that use them configure the address.
var documentation = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("2001:db8::/32"),
}

func isSharedOrDocumentation(a netip.Addr) bool {
	if shared.Contains(a) {
		return true
	}
	for _, p := range documentation {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Detect applies Choose to the addresses of the host's interfaces.
func Detect() (netip.Addr, bool, error) {
	addrs, err := kernel.HostAddrs()
	if err != nil {
		return netip.Addr{}, false, err
	}
	a, public := Choose(addrs)
	if !a.IsValid() {
		return a, false, fmt.Errorf("no usable address among %d interface addresses: set public_address", len(addrs))
	}
	return a, public, nil
}
