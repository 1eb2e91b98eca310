package reachability

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// Target is a port to probe. Open returns its socket in the family of the
// STUN server ("udp4" or "udp6"); the check closes it when done.
type Target struct {
	Kind Kind
	Open func(network string) (Socket, error)
}

// check probes every target against the configured STUN servers, in
// order, and stops at the first server that can tell (whose answers are
// not all cannot_tell); when none can, the first server's answers say why.
func (c *Checker) check(ctx context.Context) Report {
	if len(c.cfg.Servers) == 0 {
		return noServerReport()
	}
	targets := c.cfg.Targets()
	var first *Report
	for _, server := range c.cfg.Servers {
		addr, err := resolve(ctx, server)
		var results []PortResult
		if err != nil {
			results = []PortResult{(PortResult{}).cannotTell(causeNoAnswer, fmt.Sprintf("STUN server %s: %v", server, err))}
		} else {
			results = probeAll(ctx, targets, addr, c.cfg.Timing)
		}
		r := c.report(results, server, addr)
		if r.Verdict != CannotTell {
			return r
		}
		if first == nil {
			first = &r
		}
	}
	return *first
}

// probeAll probes the targets at once (each has its own socket), so a
// check lasts as long as its slowest port.
func probeAll(ctx context.Context, targets []Target, server netip.AddrPort, tm Timing) []PortResult {
	network := "udp4"
	if server.Addr().Is6() {
		network = "udp6"
	}
	results := make([]PortResult, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sock, err := t.Open(network)
			if err != nil {
				results[i] = (PortResult{Kind: t.Kind}).cannotTell(causeLocal, fmt.Sprintf("no %s port to probe from: %v", t.Kind, err))
				return
			}
			defer sock.Close()
			results[i] = probePort(ctx, sock, server, tm)
			results[i].Kind = t.Kind
		}()
	}
	wg.Wait()
	return results
}

// resolve finds the STUN server's address (IPv4 first: it is the family
// of the advertised address).
func resolve(ctx context.Context, server string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(server)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := net.DefaultResolver.LookupPort(ctx, "udp", port)
	if err != nil {
		return netip.AddrPort{}, err
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if len(addrs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("%s has no address", host)
	}
	best := addrs[0].Unmap()
	for _, a := range addrs {
		if a.Unmap().Is4() {
			best = a.Unmap()
			break
		}
	}
	return netip.AddrPortFrom(best, uint16(p)), nil
}

// deviceAddr is the address this device reaches server from (the route's
// source; no datagram is sent), for the advice to forward ports to it.
func deviceAddr(server netip.AddrPort) netip.Addr {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(server))
	if err != nil {
		return netip.Addr{}
	}
	defer conn.Close()
	if a, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

func verdicts(rs []PortResult) []Verdict {
	out := make([]Verdict, len(rs))
	for i, r := range rs {
		out[i] = r.Verdict
	}
	return out
}
