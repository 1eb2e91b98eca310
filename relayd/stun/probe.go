package stun

import (
	"context"
	"errors"
	"net/netip"
)

// Probe lends the server's socket to one outgoing STUN exercise at a
// time: the reachability check sends its Binding requests from the STUN
// port itself, so the answers show whether the Internet reaches that very
// port. While a Probe is open the responses the server reads (which it
// never answers) are also handed to it (they are still counted as
// dropped, DropResponse); requests are answered as ever. At most probeQueue responses wait; more are
// dropped, so a flood of forged responses costs bounded memory.
type Probe struct {
	s  *Server
	in chan probeDatagram
}

type probeDatagram struct {
	data []byte
	from netip.AddrPort
}

// probeQueue bounds the responses waiting for a Probe's Receive.
const probeQueue = 16

// ErrProbeBusy: another Probe holds the server's socket.
var ErrProbeBusy = errors.New("stun: the server's socket is lent to another probe")

// OpenProbe lends the socket; Close gives it back.
func (s *Server) OpenProbe() (*Probe, error) {
	p := &Probe{s: s, in: make(chan probeDatagram, probeQueue)}
	if !s.probe.CompareAndSwap(nil, p) {
		return nil, ErrProbeBusy
	}
	return p, nil
}

// Port is the server's port, the one the probe sends from.
func (p *Probe) Port() int { return int(p.s.addr.Port()) }

// Send sends b from the server's socket to to.
func (p *Probe) Send(b []byte, to netip.AddrPort) error {
	_, err := p.s.conn.WriteToUDPAddrPort(b, to)
	return err
}

// Receive waits for the next STUN response the server read, until ctx
// ends, and copies it into b.
func (p *Probe) Receive(ctx context.Context, b []byte) (int, netip.AddrPort, error) {
	select {
	case d := <-p.in:
		return copy(b, d.data), d.from, nil
	case <-ctx.Done():
		return 0, netip.AddrPort{}, ctx.Err()
	}
}

// Close gives the socket back: responses are dropped again.
func (p *Probe) Close() error {
	p.s.probe.CompareAndSwap(p, nil)
	return nil
}

// deliver hands a response to the open probe, if any (dropped when its
// queue is full).
func (s *Server) deliver(pkt []byte, from netip.AddrPort) {
	p := s.probe.Load()
	if p == nil {
		return
	}
	select {
	case p.in <- probeDatagram{data: append([]byte(nil), pkt...), from: from}:
	default:
	}
}
