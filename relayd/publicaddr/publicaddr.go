// Package publicaddr chooses the address a relay advertises as the host of
// its channels when none is configured: the address peers on the Internet
// reach it at, as far as the host's own interfaces can tell.
package publicaddr

import (
	"fmt"
	"net/netip"

	"github.com/jnrelay/jnrelay/internal/netclass"
	"github.com/jnrelay/jnrelay/kernel"
)

// Choose picks the best advertised address among a host's addresses:
// a public IPv4 address, else a public IPv6 address, else a private one
// (the relay is then behind NAT and only reachable from its own network;
// public reports false so the caller can warn). Loopback, link-local,
// multicast, unspecified and reserved addresses are never chosen. What is
// public is judged as the data plane's peer rule judges it (netclass), so
// the relay never advertises an address its own rule calls private.
func Choose(addrs []netip.Addr) (addr netip.Addr, public bool) {
	var v6, private netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		switch class := netclass.Of(a); {
		case class < netclass.Private, a.IsLinkLocalUnicast():
			continue // loopback, link-local, multicast, unspecified, reserved
		case class == netclass.Private:
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
