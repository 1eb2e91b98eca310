package publicaddr

import (
	"net/netip"

	"github.com/jnrelay/jnrelay/internal/netclass"
	"github.com/jnrelay/jnrelay/kernel"
)

// IPv6 is the relay's public IPv6 address, the host of the built-in TURN
// server's IPv6 relayed addresses (channels and the rest advertise
// Watcher's address). IPv6 has no NAT to learn through: the address is
// the configured one, or one an interface holds.
type IPv6 struct {
	configured netip.Addr
	hostAddrs  func() ([]netip.Addr, error)
}

// NewIPv6 returns the IPv6 address source: configured when valid, else
// the interfaces, read at each Current so that a new prefix shows at once.
func NewIPv6(configured netip.Addr) *IPv6 {
	return &IPv6{configured: configured, hostAddrs: kernel.HostAddrs}
}

// Current is the public IPv6 address (invalid while there is none).
func (v *IPv6) Current() netip.Addr {
	if v.configured.IsValid() {
		return v.configured
	}
	addrs, err := v.hostAddrs()
	if err != nil {
		return netip.Addr{}
	}
	return ChooseIPv6(addrs)
}

// ChooseIPv6 picks the first public IPv6 address among addrs, judged as
// the peer rule judges it (netclass): not one that carries an IPv4
// address (NAT64, 6to4, mapped), not ULA, link-local or documentation
// addresses. Invalid when there is none: a relay without global IPv6
// gives no IPv6 relayed addresses rather than private ones.
func ChooseIPv6(addrs []netip.Addr) netip.Addr {
	for _, a := range addrs {
		if a.Is6() && !a.Is4In6() && netclass.Canonical(a).Is6() && netclass.Of(a) == netclass.Public {
			return a.WithZone("")
		}
	}
	return netip.Addr{}
}
