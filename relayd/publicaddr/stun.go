package publicaddr

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v4"
)

// stunTimeout bounds one STUN query.
const stunTimeout = 3 * time.Second

// MappedAddress asks the STUN servers (host:port), in order, which address
// a datagram from local arrives from, and returns the first answer and the
// server that gave it.
func MappedAddress(ctx context.Context, local netip.Addr, servers []string) (netip.Addr, string, error) {
	var errs []error
	for _, server := range servers {
		a, err := mapped(ctx, local, server)
		if err == nil {
			return a, server, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", server, err))
	}
	return netip.Addr{}, "", errors.Join(errs...)
}

func mapped(ctx context.Context, local netip.Addr, server string) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, stunTimeout)
	defer cancel()
	d := net.Dialer{LocalAddr: net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0))}
	conn, err := d.DialContext(ctx, "udp", server)
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if _, err := conn.Write(req.Raw); err != nil {
		return netip.Addr{}, err
	}
	buf := make([]byte, 1500)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return netip.Addr{}, err
		}
		var res stun.Message
		res.Raw = buf[:n]
		if res.Decode() != nil || res.TransactionID != req.TransactionID {
			continue // not our answer: keep waiting until the deadline
		}
		if res.Type != stun.BindingSuccess {
			return netip.Addr{}, fmt.Errorf("answer %s", res.Type)
		}
		a, err := MappedFrom(&res)
		return a.Addr(), err
	}
}

// MappedFrom is a Binding response's XOR-MAPPED-ADDRESS, or the
// MAPPED-ADDRESS of an RFC 3489 server (Debian's stund sends
// XOR-MAPPED-ADDRESS under the type of an old draft, which pion does not
// read).
func MappedFrom(m *stun.Message) (netip.AddrPort, error) {
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err == nil {
		if ip, ok := netip.AddrFromSlice(xa.IP); ok {
			return netip.AddrPortFrom(ip.Unmap(), uint16(xa.Port)), nil
		}
	}
	var ma stun.MappedAddress
	if err := ma.GetFrom(m); err != nil {
		return netip.AddrPort{}, errors.New("no XOR-MAPPED-ADDRESS or MAPPED-ADDRESS")
	}
	ip, ok := netip.AddrFromSlice(ma.IP)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad mapped address %v", ma.IP)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(ma.Port)), nil
}
