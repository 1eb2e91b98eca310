package kernel

import (
	"fmt"
	"net"
	"net/netip"
)

// HostAddrs lists the addresses of the host's interfaces (in the calling
// thread's network namespace), as the kernel reports them.
func HostAddrs() ([]netip.Addr, error) {
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(ifas))
	for _, ia := range ifas {
		if p, err := netip.ParsePrefix(ia.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out, nil
}
