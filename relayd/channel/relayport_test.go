package channel

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"testing"
)

func TestRelayPortsShareThePool(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) { c.PortMin, c.PortMax = testPortMin, testPortMin+7 }) // two blocks
	p, err := m.OpenRelayPort("udp4")
	if err != nil {
		t.Fatal(err)
	}
	info, err := m.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	port := int(p.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port())
	if port == info.LocalPort || port%4 != info.LocalPort%4 || port < testPortMin || port > testPortMin+7 {
		t.Fatalf("relay port %d beside channel %d in %d-%d", port, info.LocalPort, testPortMin, testPortMin+7)
	}
	if _, err := m.OpenRelayPort("udp4"); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("third block: %v, want ErrPoolExhausted", err)
	}
	if _, err := m.Allocate(); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("channel beyond the pool: %v, want ErrPoolExhausted", err)
	}
	// A relay port is the relay's own: no peer may be at it.
	if m.PermitsPeer(netip.AddrPortFrom(loopback, uint16(port))) {
		t.Fatalf("peer at the relay's own port %d permitted", port)
	}
	p.Close()
	p.Close() // twice gives the block back once
	// A relay on loopback (a test) serves its own host: the freed port is
	// an ordinary peer again.
	if !m.PermitsPeer(netip.AddrPortFrom(loopback, uint16(port))) {
		t.Fatalf("closed relay port %d still refused as a peer", port)
	}
	if _, err := m.Allocate(); err != nil {
		t.Fatalf("block not back in the pool: %v", err)
	}
	if _, err := m.OpenRelayPort("udp4"); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("block given back twice: %v", err)
	}
}

func TestRelayPortRefusedWhileDraining(t *testing.T) {
	m, _ := newTestManager(t, nil)
	m.Drain()
	if _, err := m.OpenRelayPort("udp4"); !errors.Is(err, ErrDraining) {
		t.Fatalf("draining: %v, want ErrDraining", err)
	}
}

func TestPermitsPeerEverySpelling(t *testing.T) {
	m, _ := newTestManager(t, nil)
	info, err := m.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	live := uint16(info.LocalPort)
	for _, s := range []string{"0.0.0.0:5000", "[::]:5000", "224.0.0.1:5000", "127.0.0.1:0",
		"127.0.0.1:" + strconv.Itoa(int(live)), "[::ffff:127.0.0.1]:" + strconv.Itoa(int(live)), "[::1]:" + strconv.Itoa(int(live))} {
		if m.PermitsPeer(netip.MustParseAddrPort(s)) {
			t.Errorf("peer %s permitted", s)
		}
	}
	// The relay listens on loopback (a test): its own host's other ports
	// are peers.
	if !m.PermitsPeer(netip.MustParseAddrPort("127.0.0.1:5000")) {
		t.Error("loopback peer of a loopback relay refused")
	}
}

// TestRelayPortSkipsBusyBlocks: a block whose first port another program
// holds is skipped, as for channels, and left to the pool.
func TestRelayPortSkipsBusyBlocks(t *testing.T) {
	hold, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 27220})
	if err != nil {
		t.Skipf("cannot hold test port: %v", err)
	}
	defer hold.Close()
	m, _ := newTestManager(t, func(c *Config) { c.PortMin, c.PortMax = 27220, 27227 }) // two blocks
	p, err := m.OpenRelayPort("udp4")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if port := p.LocalAddr().(*net.UDPAddr).Port; port != 27224 {
		t.Fatalf("got relay port %d, want the free block's 27224", port)
	}
	if _, err := m.OpenRelayPort("udp4"); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("open with only a busy block left: %v, want ErrPoolExhausted", err)
	}
}

func TestEdgePortsTakeTheRangesEnds(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) { c.PortMin, c.PortMax = testPortMin, testPortMin+11 }) // three blocks
	portOf := func(p *RelayPort) int {
		return int(p.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port())
	}
	low, err := m.OpenEdgePort("udp4", LowestPort)
	if err != nil {
		t.Fatal(err)
	}
	defer low.Close()
	high, err := m.OpenEdgePort("udp4", HighestPort)
	if err != nil {
		t.Fatal(err)
	}
	if portOf(low) != testPortMin || portOf(high) != testPortMin+8 {
		t.Fatalf("edges %d and %d, want %d and %d", portOf(low), portOf(high), testPortMin, testPortMin+8)
	}
	// The highest block is held: the next highest free one is the middle.
	next, err := m.OpenEdgePort("udp4", HighestPort)
	if err != nil {
		t.Fatal(err)
	}
	if portOf(next) != testPortMin+4 {
		t.Fatalf("next highest %d, want %d", portOf(next), testPortMin+4)
	}
	next.Close()
	high.Close()
	if _, err := m.Allocate(); err != nil {
		t.Fatalf("a channel after the probes gave their blocks back: %v", err)
	}
}
