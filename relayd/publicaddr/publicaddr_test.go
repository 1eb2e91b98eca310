package publicaddr

import (
	"net/netip"
	"testing"
)

func TestChoose(t *testing.T) {
	p := netip.MustParseAddr
	cases := []struct {
		name   string
		addrs  []netip.Addr
		want   netip.Addr
		public bool
	}{
		{"public v4 wins over private and v6", []netip.Addr{p("127.0.0.1"), p("192.168.1.2"), p("2a01:4f8::1"), p("81.2.69.1")}, p("81.2.69.1"), true},
		{"public v6 when no public v4", []netip.Addr{p("10.0.0.5"), p("fe80::1"), p("2a01:4f8::1")}, p("2a01:4f8::1"), true},
		{"private behind NAT", []netip.Addr{p("127.0.0.1"), p("192.168.1.2"), p("10.0.0.1")}, p("192.168.1.2"), false},
		{"CGNAT and documentation are not public", []netip.Addr{p("100.64.1.1"), p("203.0.113.1")}, p("100.64.1.1"), false},
		{"ULA is not public", []netip.Addr{p("fd00::1")}, p("fd00::1"), false},
		{"v4-mapped unmapped", []netip.Addr{p("::ffff:81.2.69.1")}, p("81.2.69.1"), true},
		{"reserved and benchmarking are not chosen as public", []netip.Addr{p("240.0.0.7"), p("198.18.0.1")}, p("198.18.0.1"), false},
		{"6to4 of a private address is private", []netip.Addr{p("2002:a00:5::1")}, p("2002:a00:5::1"), false},
		{"nothing usable", []netip.Addr{p("127.0.0.1"), p("::1"), p("fe80::1"), p("0.0.0.0")}, netip.Addr{}, false},
	}
	for _, c := range cases {
		got, public := Choose(c.addrs)
		if got != c.want || public != c.public {
			t.Errorf("%s: got %v public=%v, want %v public=%v", c.name, got, public, c.want, c.public)
		}
	}
}
