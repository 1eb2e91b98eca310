package portmap

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/huin/goupnp/soap"
)

// UPnP error codes relayd acts on (IGD WANIPConnection:2 §2.5).
const (
	upnpOnlyPermanentLeases = 725
)

// upnpClient maps ports through an IGD's WANIPConnection or
// WANPPPConnection service: the SOAP of github.com/huin/goupnp over
// gatewayHTTP's guarded client (goupnp's generated clients and its
// discovery are not used: they fetch descriptions through a process-wide
// HTTP client without bounds, and weigh ~1 MB).
type upnpClient struct {
	soap    *soap.SOAPClient
	service string
	local   netip.Addr
	// permanentOnly is set when the router refused a lease time (725):
	// mappings are then made without one and deleted at stop.
	permanentOnly bool
}

// discoverUPnP finds the gateway's IGD port-mapping service.
func discoverUPnP(ctx context.Context, gateway, local netip.Addr) (*upnpClient, []error, error) {
	locations, refused, err := ssdpSearch(ctx, gateway, local)
	if err != nil {
		return nil, refused, err
	}
	hc := gatewayHTTP(gateway)
	var errs []error
	for _, loc := range locations {
		u, service, err := controlURL(ctx, hc, gateway, loc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sc := soap.NewSOAPClient(*u)
		sc.HTTPClient = *hc
		return &upnpClient{soap: sc, service: service, local: local}, refused, nil
	}
	return nil, refused, errors.Join(errs...)
}

func (c *upnpClient) protocol() Protocol { return UPnP }

func (c *upnpClient) externalAddress(ctx context.Context) (netip.Addr, error) {
	var out struct {
		NewExternalIPAddress string
	}
	if err := c.soap.PerformActionCtx(ctx, c.service, "GetExternalIPAddress", nil, &out); err != nil {
		return netip.Addr{}, fmt.Errorf("upnp GetExternalIPAddress: %s", bounded(err.Error()))
	}
	a, err := netip.ParseAddr(strings.TrimSpace(out.NewExternalIPAddress))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("upnp GetExternalIPAddress: %w", err)
	}
	if err := validExternal(a); err != nil {
		return netip.Addr{}, fmt.Errorf("upnp: %w", err)
	}
	return a.Unmap(), nil
}

// upnpAddPortMapping is AddPortMapping's arguments, in the order the
// specification lists them (SOAP arguments are positional for some
// routers).
type upnpAddPortMapping struct {
	NewRemoteHost             string
	NewExternalPort           string
	NewProtocol               string
	NewInternalPort           string
	NewInternalClient         string
	NewEnabled                string
	NewPortMappingDescription string
	NewLeaseDuration          string
}

type upnpDeletePortMapping struct {
	NewRemoteHost   string
	NewExternalPort string
	NewProtocol     string
}

func (c *upnpClient) add(ctx context.Context, p Port, lifetime time.Duration) (time.Duration, error) {
	if c.permanentOnly {
		lifetime = 0
	}
	in := upnpAddPortMapping{
		NewExternalPort:           strconv.Itoa(p.Port),
		NewProtocol:               strings.ToUpper(string(p.Transport)),
		NewInternalPort:           strconv.Itoa(p.Port),
		NewInternalClient:         c.local.String(),
		NewEnabled:                "1",
		NewPortMappingDescription: "jnrelay " + p.Purpose,
		NewLeaseDuration:          strconv.Itoa(int(lifetime / time.Second)),
	}
	err := c.soap.PerformActionCtx(ctx, c.service, "AddPortMapping", &in, nil)
	var fault *soap.SOAPFaultError
	if errors.As(err, &fault) && fault.Detail.UPnPError.Errorcode == upnpOnlyPermanentLeases && lifetime != 0 {
		c.permanentOnly = true
		return c.add(ctx, p, 0)
	}
	if errors.As(err, &fault) {
		return 0, fmt.Errorf("upnp: port %d/%s: %w (error %d %s)", p.Port, p.Transport, errRefused,
			fault.Detail.UPnPError.Errorcode, bounded(fault.Detail.UPnPError.ErrorDescription))
	}
	if err != nil {
		return 0, fmt.Errorf("upnp: port %d/%s: %s", p.Port, p.Transport, bounded(err.Error()))
	}
	return lifetime, nil
}

func (c *upnpClient) remove(ctx context.Context, p Port) error {
	in := upnpDeletePortMapping{NewExternalPort: strconv.Itoa(p.Port), NewProtocol: strings.ToUpper(string(p.Transport))}
	if err := c.soap.PerformActionCtx(ctx, c.service, "DeletePortMapping", &in, nil); err != nil {
		return fmt.Errorf("upnp: delete port %d/%s: %s", p.Port, p.Transport, bounded(err.Error()))
	}
	return nil
}

// bounded shortens a router's text (goupnp quotes whole replies in its
// errors) before it reaches a log line.
func bounded(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
