// Package portmap asks the donor's home router to forward relayd's own
// ports to it: PCP (RFC 6887), else NAT-PMP (RFC 6886), else UPnP IGD
// (WANIPConnection, WANPPPConnection). It maps the STUN and TURN ports and
// as much of the relay port range as the router grants (at most
// MaxRelayPorts), renews the mappings before their lease ends, follows the
// router's external address and deletes every mapping when it stops.
//
// A router is a device on the LAN that anyone there can impersonate: every
// reply is read through a bounded parser, only the default gateway is
// asked or believed (SSDP answers, description and control URLs naming
// another address are refused), and only the ports the caller lists are
// ever requested.
package portmap

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Protocol names the way a mapping was obtained.
type Protocol string

const (
	PCP    Protocol = "pcp"
	NATPMP Protocol = "nat-pmp"
	UPnP   Protocol = "upnp"
)

// Transport is the IP protocol of a mapped port.
type Transport string

const (
	UDP Transport = "udp"
	TCP Transport = "tcp"
)

// Port is one of relayd's own ports to map (same port outside and in).
type Port struct {
	Transport Transport
	Port      int
	// Purpose says what the port is for ("stun", "turn", "relay"), for
	// the status.
	Purpose string
}

// errRefused is a router's no to one port: the mapping goes without it.
var errRefused = errors.New("refused by the router")

// client speaks one protocol to one router. Every method bounds its own
// wait; add and remove map the same port number outside and in, or
// fail.
type client interface {
	protocol() Protocol
	// externalAddress is the router's address on the Internet side.
	externalAddress(ctx context.Context) (netip.Addr, error)
	// add maps p for lifetime (0 = as long as the router keeps it) and
	// returns the lease granted. A refusal of this port alone wraps
	// errRefused; any other error means the router stopped answering.
	add(ctx context.Context, p Port, lifetime time.Duration) (time.Duration, error)
	remove(ctx context.Context, p Port) error
}

// validExternal refuses an external address a relay could not advertise:
// a router (or an impostor) saying 0.0.0.0, loopback or multicast.
func validExternal(a netip.Addr) error {
	a = a.Unmap()
	if !a.Is4() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return fmt.Errorf("external address %s is not a unicast IPv4 address", a)
	}
	return nil
}
