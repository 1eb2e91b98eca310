package netclass

import (
	"net/netip"
	"testing"
)

// TestOf judges addresses in every spelling an attacker may use.
func TestOf(t *testing.T) {
	tests := map[string]Class{
		"1.2.3.4": Public, "2a00:1450::1": Public, "::ffff:1.2.3.4": Public,
		"0.0.0.0": Forbidden, "::": Forbidden, "::ffff:0.0.0.0": Forbidden, "0.1.2.3": Forbidden,
		"224.0.0.1": Forbidden, "ff02::1": Forbidden, "ff05::1:3": Forbidden,
		"255.255.255.255": Forbidden, "240.0.0.1": Forbidden, "::ffff:255.255.255.255": Forbidden,
		"127.0.0.1": Loopback, "127.8.9.10": Loopback, "::1": Loopback, "::ffff:127.0.0.1": Loopback,
		"::127.0.0.1": Loopback, "64:ff9b::7f00:1": Loopback, "2002:7f00:1::1": Loopback,
		"10.1.2.3": Private, "::ffff:10.1.2.3": Private, "64:ff9b::a01:203": Private, "2002:a01:203::1": Private,
		"172.16.0.1": Private, "192.168.1.7": Private, "100.64.0.1": Private, "169.254.1.1": Private,
		"fe80::1%eth0": Private, "fd00::1": Private, "203.0.113.5": Private, "198.18.0.1": Private,
		"2001:db8::1": Private, "64:ff9b:1::7f00:1": Private, "64:ff9b:1:a00::1": Private,
		"fc00::1": Private, "fe80::1": Private, "2002:c0a8:101::1": Private, "2002:a9fe:101::1": Private,
		"::ffff:169.254.1.1": Private, "64:ff9b::a9fe:101": Private,
	}
	for s, want := range tests {
		if got := Of(netip.MustParseAddr(s)); got != want {
			t.Errorf("Of(%s) = %s, want %s", s, got, want)
		}
	}
	if got := Of(netip.Addr{}); got != Forbidden {
		t.Errorf("Of(invalid) = %s, want forbidden", got)
	}
}

// TestCanonical: spellings that carry an IPv4 address become it; others
// stay themselves, without a zone.
func TestCanonical(t *testing.T) {
	for in, want := range map[string]string{
		"::ffff:1.2.3.4": "1.2.3.4", "::1.2.3.4": "1.2.3.4", "64:ff9b::102:304": "1.2.3.4",
		"2002:102:304::9": "1.2.3.4", "::1": "::1", "::": "::", "fe80::1%eth0": "fe80::1", "2a00:1450::1": "2a00:1450::1",
	} {
		if got := Canonical(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("Canonical(%s) = %s, want %s", in, got, want)
		}
	}
}

// FuzzClass: every spelling of an address is judged as the address it
// carries: an IPv4 address, its IPv4-mapped, IPv4-compatible, NAT64 and
// 6to4 forms get one class, and judging is stable under Canonical.
func FuzzClass(f *testing.F) {
	f.Add([]byte{127, 0, 0, 1})
	f.Add([]byte{10, 1, 2, 3})
	f.Add([]byte{8, 8, 4, 4})
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 4 {
			return
		}
		v4 := netip.AddrFrom4([4]byte(b[:4]))
		var mapped, compat, nat64, sixToFour [16]byte
		copy(mapped[10:], []byte{0xff, 0xff})
		copy(mapped[12:], b[:4])
		copy(compat[12:], b[:4])
		copy(nat64[:], []byte{0, 0x64, 0xff, 0x9b})
		copy(nat64[12:], b[:4])
		copy(sixToFour[:], []byte{0x20, 0x02})
		copy(sixToFour[2:], b[:4])
		want := Of(v4)
		for _, a := range []netip.Addr{netip.AddrFrom16(mapped), netip.AddrFrom16(nat64), netip.AddrFrom16(sixToFour)} {
			if got := Of(a); got != want {
				t.Fatalf("%s is %s, %s %s", a, got, v4, want)
			}
		}
		// ::a.b.c.d is IPv4 only where it is not :: or ::1 itself.
		if c := netip.AddrFrom16(compat); !c.IsUnspecified() && !c.IsLoopback() && Of(c) != want {
			t.Fatalf("%s is %s, %s %s", c, Of(c), v4, want)
		}
		if len(b) >= 16 {
			a := netip.AddrFrom16([16]byte(b[:16]))
			if Of(Canonical(a)) != Of(a) {
				t.Fatalf("%s: %s, canonical %s %s", a, Of(a), Canonical(a), Of(Canonical(a)))
			}
		}
	})
}
