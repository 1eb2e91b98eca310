package turn

import (
	"net"
	"time"
)

// pion answers an Allocate with EVEN-PORT (coturn's clients send it) by
// first opening relayed sockets with no user id, up to 128 times, until
// one has an even port, closing each at once, and then asking for that
// port (GetRandomEvenPort). The data plane chooses relay ports itself and
// a requested port is not honoured, so such a probe is answered without
// taking anything: no relay port, no admission reservation in an
// anonymous requester's name, nothing counted or listed as an
// allocation. Its port 0 is even, and "any port" to pion.
type evenPortProbe struct{}

// isEvenPortProbe tells pion's probe from an allocation: every allocation
// carries the credential id, never empty (parseUsername).
func isEvenPortProbe(userID string) bool { return userID == "" }

func (s *Server) evenPortProbe() (net.PacketConn, net.Addr, error) {
	return evenPortProbe{}, &net.UDPAddr{IP: s.addr.Addr().AsSlice(), Port: 0}, nil
}

func (evenPortProbe) ReadFrom([]byte) (int, net.Addr, error) { return 0, nil, net.ErrClosed }
func (evenPortProbe) WriteTo([]byte, net.Addr) (int, error)  { return 0, net.ErrClosed }
func (evenPortProbe) Close() error                           { return nil }
func (evenPortProbe) LocalAddr() net.Addr                    { return &net.UDPAddr{} }
func (evenPortProbe) SetDeadline(time.Time) error            { return nil }
func (evenPortProbe) SetReadDeadline(time.Time) error        { return nil }
func (evenPortProbe) SetWriteDeadline(time.Time) error       { return nil }
