package reachability

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"time"
)

// udpSocket is a Socket over a UDP socket of its own.
type udpSocket struct {
	conn  *net.UDPConn
	close func() error
}

// UDPSocket makes conn a Socket; close releases it (a relay port's own
// Close, which gives its block back to the pool).
func UDPSocket(conn *net.UDPConn, close func() error) Socket {
	return &udpSocket{conn: conn, close: close}
}

func (s *udpSocket) Send(b []byte, to netip.AddrPort) error {
	_, err := s.conn.WriteToUDPAddrPort(b, to)
	return err
}

func (s *udpSocket) Receive(ctx context.Context, b []byte) (int, netip.AddrPort, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Time{}
	}
	if err := s.conn.SetReadDeadline(deadline); err != nil {
		return 0, netip.AddrPort{}, err
	}
	// A cancelled ctx unblocks the read at once.
	stop := context.AfterFunc(ctx, func() { _ = s.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	n, from, err := s.conn.ReadFromUDPAddrPort(b)
	switch {
	case err != nil && ctx.Err() != nil:
		return 0, netip.AddrPort{}, ctx.Err()
	case errors.Is(err, os.ErrDeadlineExceeded):
		// ctx's deadline, read by the socket a moment before ctx's own
		// timer fired.
		return 0, netip.AddrPort{}, context.DeadlineExceeded
	}
	return n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), err
}

func (s *udpSocket) Port() int {
	if a, ok := s.conn.LocalAddr().(*net.UDPAddr); ok {
		return a.Port
	}
	return 0
}

func (s *udpSocket) Close() error { return s.close() }
