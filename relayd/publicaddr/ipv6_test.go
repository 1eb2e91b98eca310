package publicaddr

import (
	"errors"
	"net/netip"
	"testing"
)

func TestChooseIPv6(t *testing.T) {
	parse := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	for _, tc := range []struct {
		addrs []netip.Addr
		want  string
	}{
		{parse("127.0.0.1", "::1", "fe80::1%eth0", "fd00::5", "2001:db8::5", "198.51.100.7", "2a00:1450::7"), "2a00:1450::7"},
		{parse("::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "8.8.8.8", "2a00:1450::7"), "2a00:1450::7"},
		{parse("8.8.8.8", "fd00::5", "fe80::1"), ""},
		{nil, ""},
	} {
		got := ChooseIPv6(tc.addrs)
		if (tc.want == "" && got.IsValid()) || (tc.want != "" && got != netip.MustParseAddr(tc.want)) {
			t.Errorf("ChooseIPv6(%v) = %v, want %q", tc.addrs, got, tc.want)
		}
	}
}

func TestIPv6Current(t *testing.T) {
	detected := &IPv6{hostAddrs: func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("2a00:1450::7")}, nil }}
	if got := detected.Current(); got != netip.MustParseAddr("2a00:1450::7") {
		t.Fatalf("detected %v", got)
	}
	configured := &IPv6{configured: netip.MustParseAddr("2001:db8::9"), hostAddrs: detected.hostAddrs}
	if got := configured.Current(); got != netip.MustParseAddr("2001:db8::9") {
		t.Fatalf("configured %v", got)
	}
	failing := &IPv6{hostAddrs: func() ([]netip.Addr, error) { return nil, errors.New("no netlink") }}
	if got := failing.Current(); got.IsValid() {
		t.Fatalf("unreadable interfaces gave %v", got)
	}
}
