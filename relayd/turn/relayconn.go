package turn

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/jnrelay/jnrelay/relayd/admission"
	"github.com/jnrelay/jnrelay/relayd/channel"
)

// errPeerRefused is what a write to a forbidden peer returns: pion drops
// the datagram.
var errPeerRefused = errors.New("peer refused by the relay's peer rule")

// relayConn is an allocation's relayed socket: a relay port of the data
// plane, with the peer rule applied to every datagram in both directions
// (pion's PermissionHandler sees only the peer's address, not its port:
// the relay's own live ports are refused here), its bytes counted, and
// its admission ticket released and its listing entry removed when pion
// closes it at the allocation's end. Closing it ends the allocation:
// pion's reader of the socket fails and deletes the allocation (Kill).
type relayConn struct {
	*channel.RelayPort
	srv    *Server
	ticket *admission.Ticket
	id     string // in srv.allocs
	once   sync.Once

	toPeers, fromPeers atomic.Uint64
	served             atomic.Bool // relayed a datagram each way: counted in Stats.AllocationsServed
}

// noteServed counts the allocation as served the first time it has
// relayed a datagram each way.
func (c *relayConn) noteServed() {
	if !c.served.Load() && c.toPeers.Load() > 0 && c.fromPeers.Load() > 0 && c.served.CompareAndSwap(false, true) {
		c.srv.stats.served.Add(1)
	}
}

// ReadFrom returns the next datagram from a permitted peer; datagrams
// from forbidden sources are dropped and counted.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.RelayPort.ReadFromUDPAddrPort(p)
		if err != nil {
			return n, nil, err
		}
		if !c.srv.permits(from) {
			c.srv.stats.refuse(RefusedPeer)
			continue
		}
		c.srv.stats.fromPeers.Add(uint64(n))
		c.fromPeers.Add(uint64(n))
		c.noteServed()
		return n, net.UDPAddrFromAddrPort(from), nil
	}
}

// WriteTo sends p to a permitted peer; nothing is sent to a forbidden one.
func (c *relayConn) WriteTo(p []byte, to net.Addr) (int, error) {
	peer, ok := addrPortOf(to)
	if !ok || !c.srv.permits(peer) {
		c.srv.stats.refuse(RefusedPeer)
		return 0, errPeerRefused
	}
	n, err := c.RelayPort.WriteToUDPAddrPort(p, peer)
	c.srv.stats.toPeers.Add(uint64(n))
	c.toPeers.Add(uint64(n))
	c.noteServed()
	return n, err
}

// Close releases the relay port and the admission reservation, once.
func (c *relayConn) Close() error {
	err := c.RelayPort.Close()
	c.once.Do(func() {
		c.ticket.Release()
		c.srv.allocs.remove(c.id)
		c.srv.ended()
	})
	return err
}

// addrPortOf converts a UDP address pion hands over.
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := u.AddrPort()
	return ap, ap.IsValid()
}
