package channel

import (
	"net/netip"
	"testing"
)

// TestPeerRule judges sources in every spelling an attacker may use:
// IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms of loopback,
// unspecified and private addresses are refused like the plain ones.
func TestPeerRule(t *testing.T) {
	public := netip.MustParseAddr("8.8.4.4")
	own := []netip.Addr{netip.MustParseAddr("8.8.4.4"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("2001:4860::2")}
	rules := map[string]*peerRule{
		"public":   newPeerRule(public, netip.IPv4Unspecified(), own, nil),
		"private":  newPeerRule(netip.MustParseAddr("192.168.1.2"), netip.IPv4Unspecified(), own, nil),
		"loopback": newPeerRule(netip.Addr{}, netip.MustParseAddr("127.0.0.1"), nil, nil),
		"allow":    newPeerRule(public, netip.IPv4Unspecified(), own, []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("10.0.0.0/8")}),
	}
	tests := []struct {
		src                              string
		public, private, loopback, allow bool
	}{
		{"1.2.3.4:5000", true, true, true, true},
		{"[2a00:1450::1]:5000", true, true, true, true},
		{"[::ffff:1.2.3.4]:5000", true, true, true, true},
		{"1.2.3.4:0", false, false, false, false},
		// never: unspecified, multicast, broadcast, reserved, this network
		{"0.0.0.0:5000", false, false, false, false},
		{"[::]:5000", false, false, false, false},
		{"[::ffff:0.0.0.0]:5000", false, false, false, false},
		{"0.1.2.3:5000", false, false, false, false},
		{"224.0.0.1:5000", false, false, false, false},
		{"239.255.255.250:1900", false, false, false, false},
		{"[ff02::1]:5000", false, false, false, false},
		{"[ff05::1:3]:5000", false, false, false, false},
		{"255.255.255.255:5000", false, false, false, false},
		{"[::ffff:255.255.255.255]:5000", false, false, false, false},
		{"240.0.0.1:5000", false, false, false, false},
		// loopback in every spelling: only a relay on loopback serves it
		{"127.0.0.1:5000", false, false, true, false},
		{"127.8.9.10:5000", false, false, true, false},
		{"[::1]:5000", false, false, true, false},
		{"[::ffff:127.0.0.1]:5000", false, false, true, false},
		{"[::ffff:7f00:1]:5000", false, false, true, false},
		{"[::127.0.0.1]:5000", false, false, true, false},
		{"[64:ff9b::7f00:1]:5000", false, false, true, false},
		{"[2002:7f00:1::1]:5000", false, false, true, false},
		// the relay's live ports, at any own or loopback address: never
		// (the loopback relay's host has no other address here); other
		// ports of its range are not the relay
		{"127.0.0.1:40100", false, false, true, false},
		{"127.0.0.1:40002", false, false, false, false},
		{"[::ffff:127.0.0.1]:40002", false, false, false, false},
		{"8.8.4.4:40002", false, false, true, false},
		{"[::ffff:8.8.4.4]:40000", false, false, true, false},
		{"[64:ff9b::808:404]:40999", false, false, true, false},
		{"10.0.0.2:40001", false, false, true, false},
		{"[2001:4860::2]:40002", false, false, true, false},
		{"[::1]:40002", false, false, false, false},
		{"[::127.0.0.1]:40002", false, false, false, false},
		{"[64:ff9b::7f00:1]:40002", false, false, false, false},
		{"[2002:7f00:1::]:40002", false, false, false, false},
		{"[2002:808:404::1]:40002", false, false, true, false},
		// the relay's own addresses at other ports: not at a public relay
		{"8.8.4.4:5000", false, false, true, false},
		{"[2001:4860::2]:5000", false, false, true, false},
		// private, CGNAT, link-local, ULA, documentation: not at a public relay
		{"10.1.2.3:5000", false, true, true, true},
		{"[::ffff:10.1.2.3]:5000", false, true, true, true},
		{"[64:ff9b::a01:203]:5000", false, true, true, true},
		{"[2002:a01:203::1]:5000", false, true, true, true},
		{"172.16.0.1:5000", false, true, true, false},
		{"192.168.1.7:5000", false, true, true, true},
		{"100.64.0.1:5000", false, true, true, false},
		{"169.254.1.1:5000", false, true, true, false},
		{"[fe80::1%eth0]:5000", false, true, true, false},
		{"[fd00::1]:5000", false, true, true, false},
		{"[fe80::1]:5000", false, true, true, false},
		{"[fc00::1]:5000", false, true, true, false},
		{"[2001:db8::1]:5000", false, true, true, false},
		{"203.0.113.5:5000", false, true, true, false},
		{"198.18.0.1:5000", false, true, true, false},
	}
	for _, tc := range tests {
		src := netip.MustParseAddrPort(tc.src)
		for name, want := range map[string]bool{"public": tc.public, "private": tc.private, "loopback": tc.loopback, "allow": tc.allow} {
			if got := rules[name].permits(src, relayPorts); got != want {
				t.Errorf("%s relay: permits(%s) = %v, want %v", name, tc.src, got, want)
			}
		}
	}
}

// TestPeerRuleUnknownAddress: before the relay knows its public address it
// serves private networks and the Internet, never loopback or itself.
func TestPeerRuleUnknownAddress(t *testing.T) {
	r := newPeerRule(netip.Addr{}, netip.IPv4Unspecified(), []netip.Addr{netip.MustParseAddr("192.168.1.2")}, nil)
	for src, want := range map[string]bool{"1.2.3.4:5": true, "192.168.1.9:5": true, "192.168.1.2:5": false, "127.0.0.1:5": false} {
		if got := r.permits(netip.MustParseAddrPort(src), relayPorts); got != want {
			t.Errorf("permits(%s) = %v, want %v", src, got, want)
		}
	}
}

// relayPorts stands for a relay whose channels hold ports 40000-40099.
func relayPorts(p int) bool { return p >= 40000 && p < 40100 }
