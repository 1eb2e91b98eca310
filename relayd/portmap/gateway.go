package portmap

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultGateway returns the IPv4 default route's gateway and the local
// address relayd reaches it from (the route's preferred source, else the
// outgoing interface's first IPv4 address in the gateway's subnet).
func DefaultGateway() (gateway, local netip.Addr, err error) {
	routes, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return gateway, local, fmt.Errorf("read routes: %w", err)
	}
	for _, r := range routes {
		if r.Gw == nil || !isDefault(r) {
			continue
		}
		gw, ok := netip.AddrFromSlice(r.Gw.To4())
		if !ok {
			continue
		}
		// The source the kernel would pick toward the gateway.
		via, err := netlink.RouteGet(gw.AsSlice())
		if err != nil || len(via) == 0 || via[0].Src == nil {
			continue
		}
		src, ok := netip.AddrFromSlice(via[0].Src.To4())
		if !ok {
			continue
		}
		return gw, src, nil
	}
	return gateway, local, errors.New("no IPv4 default route with a gateway")
}

// isDefault reports whether r is a default route (no destination, or
// 0.0.0.0/0).
func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}
