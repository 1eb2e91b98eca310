package kernel

import (
	"errors"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// Loopback datagrams are queued (or dropped by the filter) before sendto
// returns, in the order they were sent, so "send foreign, send latched,
// read" proves the foreign one was dropped: had it passed, it would be read
// first.

func TestSourceFilterDropsForeignSources(t *testing.T) {
	for _, tc := range []struct {
		name, receiver, sender, to string
	}{
		{"ipv4", "127.0.0.1:0", "127.0.0.2:0", "127.0.0.1"},
		{"ipv6", "[::1]:0", "[2001:db8::2]:0", "::1"},
		{"ipv4 on dual-stack", "[::]:0", "127.0.0.2:0", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, raddr := sockT(t, tc.receiver)
			latched, laddr := sockT(t, tc.sender)
			foreign, _ := sockT(t, tc.sender)
			to := netip.AddrPortFrom(netip.MustParseAddr(tc.to), raddr.Port())
			rxqOvfl := EnableRxqOvfl(r)
			if rxqOvfl != nil && !errors.Is(rxqOvfl, unix.ENOPROTOOPT) {
				t.Fatal(rxqOvfl)
			}
			if err := AttachSourceFilter(r, laddr); err != nil {
				t.Fatal(err)
			}
			sendT(t, foreign, to, []byte("foreign"))
			sendT(t, latched, to, []byte("latched"))
			payload, from, oob := recvT(t, r)
			if string(payload) != "latched" || from.Addr().Unmap() != laddr.Addr() || from.Port() != laddr.Port() {
				t.Fatalf("first datagram: %q from %s; want %q from %s", payload, from, "latched", laddr)
			}
			wantEmpty(t, r)

			// The kernel counted the drop in the socket's drop counter.
			if rxqOvfl != nil {
				t.Logf("drop counter on the datagram not checked: %v (emulator)", rxqOvfl)
			} else if dropped, ok := ParseRxqOvfl(oob); !ok || dropped != 1 {
				t.Errorf("drop counter on the latched datagram = %d, %v; want 1", dropped, ok)
			}
			if d, err := Drops(r); errors.Is(err, unix.ENOPROTOOPT) {
				t.Logf("Drops not checked: %v (emulator)", err)
			} else if err != nil || d != 1 {
				t.Errorf("Drops = %d, %v; want 1", d, err)
			}
		})
	}
}

// TestSourceFilterMatchesAddressAndPort checks each field of the program
// on its own: the sender stays the same and only the latched address
// changes. Whether a datagram passed is told by replacing the filter with
// one that accepts everything and sending a marker: the first datagram read
// is the probe if it passed.
func TestSourceFilterMatchesAddressAndPort(t *testing.T) {
	for _, tc := range []struct {
		name, receiver, sender, to string
		latch                      func(sender netip.AddrPort) netip.AddrPort
		pass                       bool
		ef                         bool // sender marks EF: IPv6 byte 0 becomes 0x6b
	}{
		{"ipv4 exact", "127.0.0.1:0", "127.0.0.2:0", "127.0.0.1", same, true, false},
		{"ipv4 other port", "127.0.0.1:0", "127.0.0.2:0", "127.0.0.1", otherPort, false, false},
		{"ipv4 destination address", "127.0.0.1:0", "127.0.0.2:0", "127.0.0.1", withAddr("127.0.0.1"), false, false},
		{"ipv4 other network", "127.0.0.1:0", "127.0.0.2:0", "127.0.0.1", withAddr("10.0.0.2"), false, false},
		{"ipv6 exact", "[::1]:0", "[2001:db8::2]:0", "::1", same, true, false},
		{"ipv6 exact, EF-marked", "[::1]:0", "[2001:db8::2]:0", "::1", same, true, true},
		{"ipv6 other port", "[::1]:0", "[2001:db8::2]:0", "::1", otherPort, false, false},
		{"ipv6 destination address", "[::1]:0", "[2001:db8::2]:0", "::1", withAddr("::1"), false, false},
		{"ipv6 other last word", "[::1]:0", "[2001:db8::2]:0", "::1", withAddr("2001:db8::3"), false, false},
		{"ipv6 other first word", "[::1]:0", "[2001:db8::2]:0", "::1", withAddr("2001:db9::2"), false, false},
		{"dual-stack, ipv4-mapped latch", "[::]:0", "127.0.0.2:0", "127.0.0.1", withAddr("::ffff:127.0.0.2"), true, false},
		{"dual-stack, ipv4 latch", "[::]:0", "127.0.0.2:0", "127.0.0.1", same, true, false},
		{"dual-stack, ipv6 latch, ipv4 datagram", "[::]:0", "127.0.0.2:0", "127.0.0.1", withAddr("::7f00:2"), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, raddr := sockT(t, tc.receiver)
			s, saddr := sockT(t, tc.sender)
			to := netip.AddrPortFrom(netip.MustParseAddr(tc.to), raddr.Port())
			latch := tc.latch(saddr)
			if tc.ef {
				if err := SetDSCP(s, true, DSCPExpeditedForwarding); err != nil {
					t.Fatal(err)
				}
			}
			if err := AttachSourceFilter(r, latch); err != nil {
				t.Fatal(err)
			}
			sendT(t, s, to, []byte("probe"))
			attachRaw(t, r, acceptAll)
			sendT(t, s, to, []byte("marker"))
			payload, _, _ := recvT(t, r)
			if passed := string(payload) == "probe"; passed != tc.pass {
				t.Errorf("filter latched to %s, datagram from %s: passed = %v, want %v", latch, saddr, passed, tc.pass)
			}
		})
	}
}

func same(a netip.AddrPort) netip.AddrPort { return a }

func otherPort(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr(), a.Port()^1) }

func withAddr(addr string) func(netip.AddrPort) netip.AddrPort {
	return func(a netip.AddrPort) netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr(addr), a.Port())
	}
}

func TestAttachSourceFilterRejectsInvalidSource(t *testing.T) {
	fd, _ := sockT(t, "127.0.0.1:0")
	for _, src := range []netip.AddrPort{{}, netip.MustParseAddrPort("127.0.0.1:0")} {
		if err := AttachSourceFilter(fd, src); err == nil {
			t.Errorf("AttachSourceFilter(%s) succeeded", src)
		}
	}
}

func TestDetachFilter(t *testing.T) {
	r, raddr := sockT(t, "127.0.0.1:0")
	latched, laddr := sockT(t, "127.0.0.2:0")
	foreign, faddr := sockT(t, "127.0.0.2:0")
	if err := AttachSourceFilter(r, laddr); err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent: the second call finds no filter
		err := DetachFilter(r)
		skipIfUntranslated(t, err)
		if err != nil {
			t.Fatal(err)
		}
	}
	sendT(t, foreign, raddr, []byte("foreign"))
	sendT(t, latched, raddr, []byte("latched"))
	for _, want := range []netip.AddrPort{faddr, laddr} {
		if _, from, _ := recvT(t, r); from != want {
			t.Errorf("after detach: datagram from %s, want %s", from, want)
		}
	}
	if err := DetachFilter(-1); err == nil {
		t.Error("DetachFilter(-1) succeeded")
	}
}

// TestSourceFilterOffsets pins down what the program relies on: a UDP
// socket filter's data starts at the UDP header, and SKF_NET_OFF reaches
// the IP header. A filter returning the loaded byte plus 16 as the length
// to keep trims the datagram to reveal that byte.
func TestSourceFilterOffsets(t *testing.T) {
	for _, tc := range []struct {
		name, receiver, sender, to string
		offsets                    []uint32
		want                       func(sender, receiver netip.AddrPort) []byte
	}{
		{"ipv4 udp source port", "127.0.0.1:0", "127.0.0.2:0", "127.0.0.1", []uint32{0, 1}, portBytes},
		{"ipv4 source address", "127.0.0.1:0", "127.0.0.2:0", "127.0.0.1", seq(ipv4SrcOff, 4), addrBytes},
		{"ipv4 version", "127.0.0.1:0", "127.0.0.2:0", "127.0.0.1", []uint32{ipVersionOff}, firstByte(0x45)},
		{"ipv6 udp source port", "[::1]:0", "[2001:db8::2]:0", "::1", []uint32{0, 1}, portBytes},
		{"ipv6 source address", "[::1]:0", "[2001:db8::2]:0", "::1", seq(ipv6SrcOff, 16), addrBytes},
		{"ipv6 version", "[::1]:0", "[2001:db8::2]:0", "::1", []uint32{ipVersionOff}, firstByte(0x60)},
		{"ipv4 on dual-stack source address", "[::]:0", "127.0.0.2:0", "127.0.0.1", seq(ipv4SrcOff, 4), addrBytes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, raddr := sockT(t, tc.receiver)
			s, saddr := sockT(t, tc.sender)
			to := netip.AddrPortFrom(netip.MustParseAddr(tc.to), raddr.Port())
			var got []byte
			for _, off := range tc.offsets {
				attachRaw(t, r, []unix.SockFilter{
					{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: off},
					{Code: unix.BPF_ALU | unix.BPF_ADD | unix.BPF_K, K: 16},
					{Code: unix.BPF_RET | unix.BPF_A},
				})
				sendT(t, s, to, make([]byte, 512))
				payload, _, _ := recvT(t, r)
				got = append(got, byte(len(payload)+8-16))
			}
			if want := tc.want(saddr, raddr); string(got) != string(want) {
				t.Errorf("bytes at %v = %x, want %x", tc.offsets, got, want)
			}
		})
	}
}

// acceptAll keeps every datagram whole.
var acceptAll = []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff}}

func attachRaw(t testing.TB, fd int, prog []unix.SockFilter) {
	t.Helper()
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		t.Fatalf("attach filter: %v", err)
	}
}

func seq(from uint32, n int) []uint32 {
	offs := make([]uint32, n)
	for i := range offs {
		offs[i] = from + uint32(i)
	}
	return offs
}

func portBytes(sender, _ netip.AddrPort) []byte {
	return []byte{byte(sender.Port() >> 8), byte(sender.Port())}
}

func addrBytes(sender, _ netip.AddrPort) []byte { return sender.Addr().AsSlice() }

// firstByte is the IP header's first byte on loopback: version 4 with a
// 20-byte header (no options), or version 6 with traffic class 0.
func firstByte(b byte) func(_, _ netip.AddrPort) []byte {
	return func(_, _ netip.AddrPort) []byte { return []byte{b} }
}
