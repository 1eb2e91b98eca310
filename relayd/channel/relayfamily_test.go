package channel

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"testing"
)

func TestRelayPortAddr(t *testing.T) {
	for _, tc := range []struct {
		listen, network, want string // want "" = ErrRelayPortFamily
	}{
		{"0.0.0.0", "udp4", "0.0.0.0"},
		{"0.0.0.0", "udp6", "::"},
		{"::", "udp4", "0.0.0.0"},
		{"::", "udp6", "::"},
		{"192.0.2.7", "udp4", "192.0.2.7"},
		{"::ffff:192.0.2.7", "udp4", "192.0.2.7"},
		{"192.0.2.7", "udp6", ""},
		{"2001:db8::7", "udp6", "2001:db8::7"},
		{"2001:db8::7", "udp4", ""},
	} {
		got, err := relayPortAddr(netip.MustParseAddr(tc.listen), tc.network)
		switch {
		case tc.want == "" && !errors.Is(err, ErrRelayPortFamily):
			t.Errorf("%s on %s: %v, %v; want ErrRelayPortFamily", tc.network, tc.listen, got, err)
		case tc.want != "" && (err != nil || got != netip.MustParseAddr(tc.want)):
			t.Errorf("%s on %s: %v, %v; want %s", tc.network, tc.listen, got, err, tc.want)
		}
	}
	if _, err := relayPortAddr(netip.IPv4Unspecified(), "tcp4"); err == nil {
		t.Error("tcp4 relay port accepted")
	}
}

// TestRelayPortsOfBothFamilies: on an unspecified listen address relay
// ports of both families come from the one pool; an IPv6 one is IPv6
// only (its port number stays free for IPv4 sockets), relays ::1's
// datagrams, and is the relay's own port in every spelling.
func TestRelayPortsOfBothFamilies(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) {
		c.Listen = netip.IPv4Unspecified()
		c.PortMin, c.PortMax = testPortMin, testPortMin+7 // two blocks
	})
	if !m.ServesFamily("udp4") || !m.ServesFamily("udp6") {
		t.Fatal("unspecified listen address does not serve both families")
	}
	p6, err := m.OpenRelayPort("udp6")
	if err != nil {
		t.Fatal(err)
	}
	defer p6.Close()
	local := p6.LocalAddr().(*net.UDPAddr).AddrPort()
	if local.Addr() != netip.IPv6Unspecified() {
		t.Fatalf("IPv6 relay port bound at %s, want [::]", local)
	}
	// IPV6_V6ONLY: IPv4 can still bind the same port number.
	v4, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(local.Port())})
	if err != nil {
		t.Fatalf("IPv6 relay port also holds IPv4 port %d: %v", local.Port(), err)
	}
	v4.Close()
	p4, err := m.OpenRelayPort("udp4")
	if err != nil {
		t.Fatal(err)
	}
	defer p4.Close()
	if got := p4.LocalAddr().(*net.UDPAddr).AddrPort(); got.Port() == local.Port() || got.Addr() != netip.IPv4Unspecified() {
		t.Fatalf("IPv4 relay port %s beside IPv6 %s", got, local)
	}
	if _, err := m.OpenRelayPort("udp6"); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("third block: %v, want ErrPoolExhausted", err)
	}
	for _, s := range []string{"[::1]", "127.0.0.1", "[::ffff:127.0.0.1]", "[::127.0.0.1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::]"} {
		if m.PermitsPeer(netip.MustParseAddrPort(s + ":" + strconv.Itoa(int(local.Port())))) {
			t.Errorf("peer %s at the relay's own IPv6 relay port permitted", s)
		}
	}
	c, err := net.DialUDP("udp6", nil, &net.UDPAddr{IP: net.IPv6loopback, Port: int(local.Port())})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("v6")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, from, err := p6.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "v6" || from.Addr() != netip.IPv6Loopback() {
		t.Fatalf("IPv6 relay port read %q from %s (%v)", buf[:n], from, err)
	}
}

func TestRelayPortFamilyOfSpecificListen(t *testing.T) {
	m, _ := newTestManager(t, nil) // 127.0.0.1
	if m.ServesFamily("udp6") {
		t.Fatal("IPv4 listen address serves IPv6")
	}
	if _, err := m.OpenRelayPort("udp6"); !errors.Is(err, ErrRelayPortFamily) {
		t.Fatalf("IPv6 relay port on 127.0.0.1: %v, want ErrRelayPortFamily", err)
	}
	m6, _ := newTestManager(t, func(c *Config) { c.Listen = netip.IPv6Loopback() })
	p, err := m6.OpenRelayPort("udp6")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if a := p.LocalAddr().(*net.UDPAddr).AddrPort().Addr(); a != netip.IPv6Loopback() {
		t.Fatalf("IPv6 relay port at %s, want ::1", a)
	}
	if _, err := m6.OpenRelayPort("udp4"); !errors.Is(err, ErrRelayPortFamily) {
		t.Fatalf("IPv4 relay port on ::1: %v, want ErrRelayPortFamily", err)
	}
}
