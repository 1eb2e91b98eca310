package channel

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrRelayPortFamily is returned by OpenRelayPort for a family the
// relay's listen address does not serve.
var ErrRelayPortFamily = errors.New("relay port family not served by the listen address")

// ServesFamily reports whether relay ports of network ("udp4" or "udp6")
// can be opened: an unspecified listen address (0.0.0.0 or ::) serves
// both families, a specific one its own family only.
func (m *Manager) ServesFamily(network string) bool {
	_, err := relayPortAddr(m.sh.listen, network)
	return err == nil
}

// relayPortAddr is the address a relay port of network binds to, given
// the relay's listen address. With an unspecified listen address an IPv4
// port binds 0.0.0.0 and an IPv6 port [::]: net.ListenUDP("udp6") sets
// IPV6_V6ONLY on it, so the two families' sockets of one port number are
// apart and neither takes the other's datagrams (the pool block is taken
// once, for both: the accounting is the range's, not the family's).
func relayPortAddr(listen netip.Addr, network string) (netip.Addr, error) {
	v4 := listen.Is4() || listen.Is4In6()
	switch {
	case network != "udp4" && network != "udp6":
		return netip.Addr{}, fmt.Errorf("relay port network %q: want udp4 or udp6", network)
	case listen.IsUnspecified() && network == "udp4":
		return netip.IPv4Unspecified(), nil
	case listen.IsUnspecified():
		return netip.IPv6Unspecified(), nil
	case v4 != (network == "udp4"):
		return netip.Addr{}, fmt.Errorf("%w: %s on %s", ErrRelayPortFamily, network, listen)
	}
	return listen.Unmap(), nil
}
