package channel

import (
	"errors"
	"net"
	"net/netip"
	"sync"
)

// Relay ports for other protocols (the built-in TURN server): a TURN
// allocation takes its relayed address from the same pool as channels, a
// whole block of four ports of which it binds the first, so the range's
// capacity is shared and an allocation's port never collides with a
// channel's. Its datagrams do not pass through the workers: the TURN
// server reads and writes the socket itself, and asks PermitsPeer before
// it lets a peer in.
//
// With steered ports too a relay port is a socket of its own: the
// steering program takes only the ports live channels hold (steered.go),
// so a datagram for a relay port meets the kernel's ordinary lookup and
// reaches the socket bound there.

// RelayPort is a relay port handed out by OpenRelayPort: a UDP socket
// bound to the relay's listen address (or, when that is unspecified, the
// wildcard of its family). Close releases the port to the
// pool (once, however often it is called).
type RelayPort struct {
	*net.UDPConn
	release func()
	once    sync.Once
}

// Close closes the socket and gives its block back to the pool.
func (p *RelayPort) Close() error {
	err := p.UDPConn.Close()
	p.once.Do(p.release)
	return err
}

// OpenRelayPort takes a free block of the port range and returns a socket
// bound to its first port, in the family network names: "udp4" or
// "udp6" (relayfamily.go says at which address). It fails with
// ErrPoolExhausted when no block is free (or none can be bound),
// ErrDraining after Drain and ErrRelayPortFamily when the listen address
// serves the other family only.
func (m *Manager) OpenRelayPort(network string) (*RelayPort, error) {
	return m.openRelayPort(network, randomBlock, "relay port")
}

// Edge names an end of the port range for OpenEdgePort.
type Edge int

const (
	LowestPort  Edge = iota // the free block nearest the range's start
	HighestPort             // the free block nearest the range's end
)

// OpenEdgePort is OpenRelayPort with the lowest or highest free block
// instead of a random one: the reachability check probes the range's
// edges, where a router forwarding too few ports shows. It fails as
// OpenRelayPort does.
func (m *Manager) OpenEdgePort(network string, edge Edge) (*RelayPort, error) {
	choice := lowestBlock
	if edge == HighestPort {
		choice = highestBlock
	}
	return m.openRelayPort(network, choice, "probe port")
}

func (m *Manager) openRelayPort(network string, choice blockChoice, what string) (*RelayPort, error) {
	m.mu.Lock()
	pool, closed, draining := m.pool, m.closed, m.draining
	m.mu.Unlock()
	switch {
	case closed:
		return nil, errors.New("data plane is shut down")
	case draining:
		return nil, ErrDraining
	}
	local, err := relayPortAddr(m.sh.listen, network)
	if err != nil {
		return nil, err
	}
	var conn *net.UDPConn
	base, err := takeBound(pool, m.sh.log, "open "+what, choice, func(base int) error {
		var err error
		conn, err = net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, uint16(base))))
		return err
	})
	if err != nil {
		return nil, err
	}
	m.sh.foreign.Store(base, struct{}{})
	m.sh.log.Info(what+" opened", "port", base, "network", network)
	return &RelayPort{UDPConn: conn, release: func() {
		m.sh.foreign.Delete(base)
		pool.put(base)
		m.sh.log.Info(what+" closed", "port", base, "network", network)
	}}, nil
}

// PermitsPeer reports whether the peer rule lets the relay exchange
// datagrams with peer: the rule channels latch by (peers.go), with the
// relay's live ports — channels' and relay ports' — refused at its own
// addresses. It asks the live rule, so a change of the relay's addresses
// applies at once.
func (m *Manager) PermitsPeer(peer netip.AddrPort) bool {
	return m.sh.peers.Load().permits(peer, m.sh.isRelayPort)
}
