package portmap

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	natpmp "github.com/jackpal/go-nat-pmp"
)

// natpmpTimeout bounds one NAT-PMP call, retransmissions included (the
// library's own schedule, 250 ms doubling). It reads fixed-size replies
// and checks their version and opcode itself.
const natpmpTimeout = 2 * time.Second

// natpmpClient maps ports with NAT-PMP (RFC 6886).
type natpmpClient struct {
	c *natpmp.Client
}

func newNATPMPClient(gateway netip.Addr) *natpmpClient {
	return &natpmpClient{c: natpmp.NewClientWithTimeout(net.IP(gateway.AsSlice()), natpmpTimeout)}
}

func (c *natpmpClient) protocol() Protocol { return NATPMP }

func (c *natpmpClient) externalAddress(context.Context) (netip.Addr, error) {
	r, err := c.c.GetExternalAddress()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("nat-pmp: %w", err)
	}
	a := netip.AddrFrom4(r.ExternalIPAddress)
	if err := validExternal(a); err != nil {
		return netip.Addr{}, fmt.Errorf("nat-pmp: %w", err)
	}
	return a, nil
}

func (c *natpmpClient) add(_ context.Context, p Port, lifetime time.Duration) (time.Duration, error) {
	secs := int(lifetime / time.Second)
	if secs == 0 {
		secs = 1 << 30 // "as long as possible": the router caps it
	}
	r, err := c.c.AddPortMapping(string(p.Transport), p.Port, p.Port, secs)
	if err != nil {
		if refusal(err) {
			return 0, fmt.Errorf("nat-pmp: port %d/%s: %w: %w", p.Port, p.Transport, errRefused, err)
		}
		return 0, fmt.Errorf("nat-pmp: port %d/%s: %w", p.Port, p.Transport, err)
	}
	if int(r.MappedExternalPort) != p.Port || int(r.InternalPort) != p.Port {
		c.c.AddPortMapping(string(p.Transport), p.Port, 0, 0)
		return 0, fmt.Errorf("nat-pmp: port %d/%s: %w: offered external port %d", p.Port, p.Transport, errRefused, r.MappedExternalPort)
	}
	return time.Duration(r.PortMappingLifetimeInSeconds) * time.Second, nil
}

func (c *natpmpClient) remove(_ context.Context, p Port) error {
	// RFC 6886 §3.4: a lifetime of 0 and external port 0 delete.
	if _, err := c.c.AddPortMapping(string(p.Transport), p.Port, 0, 0); err != nil {
		return fmt.Errorf("nat-pmp: delete port %d/%s: %w", p.Port, p.Transport, err)
	}
	return nil
}

// refusal tells a router's answer with a result code (it said no) from
// a timeout or a malformed reply: the library gives both as plain
// errors, and only its text names the result code.
func refusal(err error) bool {
	return strings.Contains(err.Error(), "result code")
}
