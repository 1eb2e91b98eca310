package harness

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// IPv6 on a LAN. NewLAN addresses every host over IPv4 only (its links
// have no IPv6 link-local addresses, see NewLAN); a dual-stack test adds
// IPv6 addresses to the hosts that should have them and takes IPv4 away
// from those that should not.

// AddIPv6 gives host's LAN interface (the hub's bridge) the address p.
// It is usable at once: nodad skips duplicate-address detection, which
// would hold the address tentative for about a second.
func (l *LAN) AddIPv6(host string, p netip.Prefix) error {
	if !p.Addr().Is6() || p.Addr().Is4In6() {
		return fmt.Errorf("AddIPv6: %s is not an IPv6 prefix", p)
	}
	return ipCmd("-n", l.NS(host), "addr", "add", p.String(), "dev", l.lanIf(host), "nodad")
}

// RemoveIPv4 takes host's LAN IPv4 address away: on the LAN the host
// speaks IPv6 only (loopback keeps 127.0.0.1).
func (l *LAN) RemoveIPv4(host string) error {
	return ipCmd("-n", l.NS(host), "addr", "del", l.Addr(host).String()+"/24", "dev", l.lanIf(host))
}

// DisableIPv6 turns IPv6 off in host's namespace: the host speaks IPv4
// only, and no IPv6 socket can be opened there.
func (l *LAN) DisableIPv6(host string) error {
	for _, key := range []string{"all", "default", l.lanIf(host), "lo"} {
		arg := "net.ipv6.conf." + key + ".disable_ipv6=1"
		out, err := exec.Command("ip", "netns", "exec", l.NS(host), "sysctl", "-q", "-w", arg).CombinedOutput()
		if err != nil {
			return fmt.Errorf("sysctl %s in %s: %w: %s", arg, l.NS(host), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// lanIf is host's interface on the LAN: the bridge for the hub, its veth
// end for the others.
func (l *LAN) lanIf(host string) string {
	if host == l.Hub() {
		return bridgeIf
	}
	return hostIf
}
