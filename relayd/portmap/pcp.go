package portmap

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// pcpPort is the PCP (and NAT-PMP) server port on the router.
const pcpPort = 5351

// pcpTries bounds the retransmissions of one request: waits of 1, 2 and
// 4 s (RFC 6887 §8.1.1 starts at 3 s for a distant server; the router is
// on the LAN, but a busy one takes hundreds of milliseconds per mapping,
// and a retransmission only doubles its work).
const pcpTries = 3

// pcpClient maps ports with the PCP MAP opcode. The nonce is kept for
// the client's life so a renewal and a delete name the same mappings
// (RFC 6887 §11.2).
type pcpClient struct {
	gateway, local netip.Addr
	nonce          [12]byte
	// lastExternal is the external address of the last successful MAP:
	// PCP has no request for it alone.
	lastExternal netip.Addr
}

func newPCPClient(gateway, local netip.Addr) *pcpClient {
	c := &pcpClient{gateway: gateway, local: local}
	rand.Read(c.nonce[:])
	return c
}

func (c *pcpClient) protocol() Protocol { return PCP }

// externalAddress maps the first port the caller will map anyway is not
// known here, so it returns what the last MAP said; discovery maps a
// port first (see Mapper.discover).
func (c *pcpClient) externalAddress(context.Context) (netip.Addr, error) {
	if !c.lastExternal.IsValid() {
		return netip.Addr{}, fmt.Errorf("pcp: no mapping yet")
	}
	return c.lastExternal, nil
}

func (c *pcpClient) add(ctx context.Context, p Port, lifetime time.Duration) (time.Duration, error) {
	secs := uint32(lifetime / time.Second)
	if secs == 0 {
		secs = 1 << 31 // "as long as possible": the router caps it
	}
	r, err := c.call(ctx, p, secs)
	if err != nil {
		return 0, err
	}
	if r.result != pcpSuccess {
		err := fmt.Errorf("pcp: port %d/%s: %w (result %d)", p.Port, p.Transport, errRefused, r.result)
		if r.result == pcpUnsuppVersion {
			return 0, err // a NAT-PMP server: it may grant over NAT-PMP
		}
		return 0, pcpRefusal{err}
	}
	if int(r.externalPort) != p.Port {
		// Another port outside would be advertised wrongly: give it
		// back.
		c.call(ctx, p, 0)
		return 0, pcpRefusal{fmt.Errorf("pcp: port %d/%s: %w: offered external port %d", p.Port, p.Transport, errRefused, r.externalPort)}
	}
	if err := validExternal(r.external); err != nil {
		c.call(ctx, p, 0)
		return 0, fmt.Errorf("pcp: %w", err)
	}
	c.lastExternal = r.external
	return time.Duration(r.lifetime) * time.Second, nil
}

func (c *pcpClient) remove(ctx context.Context, p Port) error {
	r, err := c.call(ctx, p, 0)
	if err != nil {
		return err
	}
	if r.result != pcpSuccess {
		return fmt.Errorf("pcp: delete port %d/%s: result %d", p.Port, p.Transport, r.result)
	}
	return nil
}

// pcpRefusal is a refusal from a router that speaks PCP. Its NAT-PMP is
// the same service on the same port (RFC 6887 Appendix A), under the same
// policy, so it is not asked: miniupnpd, asked over NAT-PMP for a port
// its rules deny, tries every other external port in turn (65,535
// permission checks and table lookups) before it says no.
type pcpRefusal struct{ error }

func (e pcpRefusal) Unwrap() error { return e.error }

// call sends one MAP request and waits for its response (the one with
// our nonce, protocol and port), retransmitting with doubling waits.
func (c *pcpClient) call(ctx context.Context, p Port, lifetime uint32) (pcpMapResponse, error) {
	conn, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.local, 0)),
		net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.gateway, pcpPort)))
	if err != nil {
		return pcpMapResponse{}, fmt.Errorf("pcp: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	req := pcpMapRequest(c.nonce, c.local, p, lifetime)
	buf := make([]byte, pcpMaxMessage+1)
	wait := time.Second
	for try := 0; try < pcpTries; try++ {
		if _, err := conn.Write(req); err != nil {
			return pcpMapResponse{}, fmt.Errorf("pcp: %w", err)
		}
		deadline := time.Now().Add(wait)
		conn.SetReadDeadline(deadline)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				if ctx.Err() != nil {
					return pcpMapResponse{}, ctx.Err()
				}
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					break // retransmit
				}
				// ICMP port unreachable: nothing listens on 5351.
				return pcpMapResponse{}, fmt.Errorf("pcp: %w", err)
			}
			r, err := parsePCPMapResponse(buf[:n])
			if err != nil {
				return r, fmt.Errorf("pcp: %w", err)
			}
			if r.result == pcpSuccess && (r.nonce != c.nonce || r.proto != ipProto(p.Transport) || int(r.internalPort) != p.Port) {
				continue // an answer to another request
			}
			return r, nil
		}
		wait *= 2
	}
	return pcpMapResponse{}, fmt.Errorf("pcp: no answer from %s", c.gateway)
}
