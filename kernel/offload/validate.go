package offload

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/jnrelay/jnrelay/kernel/nft"
)

// validator decides whether a client may have a leg in the kernel. A leg
// forwards what its peers send to two relay ports and sends from those
// ports: relayd can do both in userspace for ports it holds, and nothing
// more may pass. So for each side, the kernel's own socket lookup
// (sockDiag) must deliver a datagram from that side's peer to the relay
// address and port to a socket the client's uid owns — at the address
// the leg sends from, and at every other address the rules match (the
// host's own, when the table was opened on the unspecified address):
// otherwise the flow would take datagrams meant for another program,
// such as the answers to a resolver's query on its ephemeral port.
type validator struct {
	uid    uint32
	listen netip.Addr
	// receiver is sockDiag.receiver: the owner of the socket that would
	// receive a datagram from peer to local.
	receiver func(peer, local netip.AddrPort) (uid uint32, found bool, err error)
}

// matched is every local address the table's rules match for a port:
// the listen address, or when it is unspecified the host's own.
func (v *validator) matched(hostAddrs []netip.Addr) []netip.Addr {
	if !v.listen.IsUnspecified() {
		return []netip.Addr{v.listen}
	}
	return hostAddrs
}

// check returns why the client may not have leg l, wrapping ErrRefused,
// or nil. hostAddrs are the host's IPv4 addresses (read by the caller
// once per request).
func (v *validator) check(l nft.Leg, hostAddrs []netip.Addr) error {
	if err := l.Valid(); err != nil {
		return fmt.Errorf("%v: %w", err, ErrRefused)
	}
	for _, side := range [2]struct {
		flow  nft.Flow
		local netip.Addr
	}{{l.A, l.LocalA}, {l.B, l.LocalB}} {
		if err := v.checkSide(side.flow, side.local.Unmap(), hostAddrs); err != nil {
			return fmt.Errorf("leg %d<->%d: %w", l.A.Port, l.B.Port, err)
		}
	}
	return nil
}

// checkSide checks one direction: datagrams from f.Peer to port f.Port,
// and datagrams sent from local:f.Port.
func (v *validator) checkSide(f nft.Flow, local netip.Addr, hostAddrs []netip.Addr) error {
	peer := netip.AddrPortFrom(f.Peer.Addr().Unmap(), f.Peer.Port())
	if a := peer.Addr(); a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || peer.Port() == 0 {
		return fmt.Errorf("peer %s: not a unicast peer: %w", peer, ErrRefused)
	}
	matched := v.matched(hostAddrs)
	if !slices.Contains(matched, local) {
		return fmt.Errorf("local address %s: not the relay's (%s): %w", local, v.listen, ErrRefused)
	}
	for _, a := range matched {
		uid, found, err := v.receiver(peer, netip.AddrPortFrom(a, f.Port))
		if err != nil {
			return fmt.Errorf("port %d: %v: %w", f.Port, err, ErrRefused)
		}
		if !found && a == local {
			return fmt.Errorf("port %s:%d: no socket of uid %d receives from %s there: %w", a, f.Port, v.uid, peer, ErrRefused)
		}
		if found && uid != v.uid {
			return fmt.Errorf("port %s:%d: datagrams from %s go to a socket of uid %d, not the client's %d: %w", a, f.Port, peer, uid, v.uid, ErrRefused)
		}
	}
	return nil
}
