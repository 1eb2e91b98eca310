package kernel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// sockT opens a blocking UDP socket bound to addr and returns it with the
// address it got. "[::]:0" makes a dual-stack socket. Tests send from
// 127.0.0.2 or 2001:db8::2 to 127.0.0.1 or ::1 so that a filter reading the
// destination address instead of the source cannot pass by accident.
func sockT(t testing.TB, addr string) (int, netip.AddrPort) {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())})
	if ap.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		t.Fatalf("socket for %s: %v", addr, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			t.Fatalf("clear IPV6_V6ONLY: %v", err)
		}
		// A documentation address as a source that differs from the
		// destination (::1 is the only local IPv6 address we can count on).
		if !ap.Addr().IsLoopback() && !ap.Addr().IsUnspecified() {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1); err != nil {
				t.Skipf("cannot bind the non-local source %s: IPV6_FREEBIND: %v", addr, err)
			}
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		t.Fatalf("bind %s: %v", addr, err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	return fd, addrPortOf(got)
}

func addrPortOf(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// sendT sends p from fd to the given address (IPv4-mapped addresses are
// sent as IPv6, so a dual-stack socket sends them as IPv4 datagrams).
func sendT(t testing.TB, fd int, to netip.AddrPort, p []byte) {
	t.Helper()
	var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: to.Addr().As16(), Port: int(to.Port())}
	if to.Addr().Is4() {
		sa = &unix.SockaddrInet4{Addr: to.Addr().As4(), Port: int(to.Port())}
	}
	if err := unix.Sendto(fd, p, 0, sa); err != nil {
		t.Fatalf("send to %s: %v", to, err)
	}
}

// recvT reads one datagram with its control messages. Loopback datagrams
// are queued before sendto returns, so the poll timeout only turns a
// missing datagram into a failure instead of a hang.
func recvT(t testing.TB, fd int) (payload []byte, from netip.AddrPort, oob []byte) {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, 5000)
	for errors.Is(err, unix.EINTR) {
		n, err = unix.Poll(pfd, 5000)
	}
	if err != nil || n != 1 {
		t.Fatalf("no datagram within 5 s on fd %d (poll: %d, %v)", fd, n, err)
	}
	buf, oob := make([]byte, 2048), make([]byte, OOBSpace)
	n, oobn, flags, sa, err := unix.Recvmsg(fd, buf, oob, unix.MSG_DONTWAIT)
	if err != nil {
		t.Fatalf("recvmsg: %v", err)
	}
	if flags&unix.MSG_CTRUNC != 0 {
		t.Errorf("control messages truncated with OOBSpace = %d", OOBSpace)
	}
	return buf[:n], addrPortOf(sa), oob[:oobn]
}

// wantEmpty fails unless fd has nothing queued.
func wantEmpty(t testing.TB, fd int) {
	t.Helper()
	var buf [2048]byte
	n, sa, err := unix.Recvfrom(fd, buf[:], unix.MSG_DONTWAIT)
	if !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("non-blocking read = %q from %v, %v; want EAGAIN", buf[:max(n, 0)], addrPortOf(sa), err)
	}
}

// skipIfUntranslated skips the test when it runs under qemu-user (make
// test-cross sets JNRELAY_QEMU_USER=1) and err is ENOPROTOOPT for an option
// that every kernel relayd supports has: qemu-user 7.2 does not translate
// SO_RXQ_OVFL, SO_DETACH_FILTER or SO_MEMINFO, so the option cannot be tested
// there. On a native run the same error is a failure of the caller's check.
func skipIfUntranslated(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, unix.ENOPROTOOPT) && os.Getenv("JNRELAY_QEMU_USER") == "1" {
		t.Skipf("%v: qemu-user does not emulate this socket option (the kernel has it)", err)
	}
}

// hasCapNetAdmin reports whether this thread may use SO_RCVBUFFORCE.
func hasCapNetAdmin(t testing.TB) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatalf("capget: %v", err)
	}
	return data[0].Effective&(1<<unix.CAP_NET_ADMIN) != 0
}

// withoutCapNetAdmin runs f on a thread of its own without CAP_NET_ADMIN in
// its effective set (capabilities are per thread). The thread is never
// unlocked, so the runtime discards it when f returns.
func withoutCapNetAdmin(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("capget: %w", err)
			return
		}
		data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("capset: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

func sysctlInt(t testing.TB, name string) int {
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
	if err != nil {
		t.Skipf("cannot read %s: %v", name, err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return v
}

func TestBufferSizeFor(t *testing.T) {
	for _, tc := range []struct{ sockets, want int }{
		{0, 256 << 10},
		{1, 256 << 10},
		{128, 256 << 10},
		{256, 128 << 10},
		{512, 64 << 10},
		{1024, 64 << 10},
		{40000, 64 << 10},
	} {
		if got := BufferSizeFor(tc.sockets); got != tc.want {
			t.Errorf("BufferSizeFor(%d) = %d, want %d", tc.sockets, got, tc.want)
		}
	}
}

func TestSetBuffers(t *testing.T) {
	rmemMax, wmemMax := sysctlInt(t, "net.core.rmem_max"), sysctlInt(t, "net.core.wmem_max")
	const small = 64 << 10
	for _, tc := range []struct {
		name             string
		force            bool // run with CAP_NET_ADMIN (else without)
		rcv, snd         int
		wantRcv, wantSnd int // as getsockopt reports: doubled
	}{
		{"plain below the sysctl cap", false, small, small, 2 * small, 2 * small},
		{"plain capped at rmem_max/wmem_max", false, rmemMax + small, wmemMax + small, 2 * rmemMax, 2 * wmemMax},
		{"forced past the cap", true, rmemMax + small, wmemMax + small, 2 * (rmemMax + small), 2 * (wmemMax + small)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.force && !hasCapNetAdmin(t) {
				t.Skip("SO_RCVBUFFORCE needs CAP_NET_ADMIN, which this test lacks")
			}
			fd, _ := sockT(t, "127.0.0.1:0")
			var gotRcv, gotSnd int
			set := func() (err error) {
				gotRcv, gotSnd, err = SetBuffers(fd, tc.rcv, tc.snd)
				return err
			}
			var err error
			if tc.force || !hasCapNetAdmin(t) {
				err = set()
			} else {
				err = withoutCapNetAdmin(set)
			}
			if err != nil {
				t.Fatal(err)
			}
			if gotRcv != tc.wantRcv || gotSnd != tc.wantSnd {
				t.Errorf("SetBuffers(%d, %d) = %d, %d; want %d, %d", tc.rcv, tc.snd, gotRcv, gotSnd, tc.wantRcv, tc.wantSnd)
			}
		})
	}
	t.Run("zero leaves buffers unchanged", func(t *testing.T) {
		fd, _ := sockT(t, "127.0.0.1:0")
		r0, s0, err := SetBuffers(fd, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if r1, s1, err := SetBuffers(fd, small, 0); err != nil || r1 != 2*small || s1 != s0 {
			t.Errorf("SetBuffers(%d, 0) = %d, %d, %v; want %d, %d (rcv was %d)", small, r1, s1, err, 2*small, s0, r0)
		}
	})
	t.Run("bad fd", func(t *testing.T) {
		if _, _, err := SetBuffers(-1, small, small); err == nil {
			t.Error("SetBuffers(-1) succeeded")
		}
	})
}

func TestSetDSCP(t *testing.T) {
	const wantTOS = 0xB8
	if DSCPExpeditedForwarding<<2 != wantTOS {
		t.Fatalf("EF<<2 = %#x, want %#x", DSCPExpeditedForwarding<<2, wantTOS)
	}
	// Each case reads the option back and checks the mark on a datagram
	// that crossed loopback (IP_RECVTOS / IPV6_RECVTCLASS).
	for _, tc := range []struct {
		name, sender, receiver string
		ipv6                   bool
		dst                    func(port uint16) netip.AddrPort
	}{
		{"ipv4", "127.0.0.1:0", "127.0.0.1:0", false, func(p uint16) netip.AddrPort {
			return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p)
		}},
		{"ipv6", "[::1]:0", "[::1]:0", true, func(p uint16) netip.AddrPort {
			return netip.AddrPortFrom(netip.MustParseAddr("::1"), p)
		}},
		{"dual-stack to ipv4-mapped", "[::]:0", "127.0.0.1:0", true, func(p uint16) netip.AddrPort {
			return netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1"), p)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := sockT(t, tc.sender)
			r, raddr := sockT(t, tc.receiver)
			if err := SetDSCP(s, tc.ipv6, DSCPExpeditedForwarding); err != nil {
				t.Fatal(err)
			}
			if got, err := unix.GetsockoptInt(s, unix.IPPROTO_IP, unix.IP_TOS); err != nil || got != wantTOS {
				t.Errorf("IP_TOS = %#x, %v; want %#x", got, err, wantTOS)
			}
			if tc.ipv6 {
				if got, err := unix.GetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_TCLASS); err != nil || got != wantTOS {
					t.Errorf("IPV6_TCLASS = %#x, %v; want %#x", got, err, wantTOS)
				}
			}
			level, opt, typ := unix.IPPROTO_IP, unix.IP_RECVTOS, unix.IP_TOS
			if raddr.Addr().Is6() {
				level, opt, typ = unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS, unix.IPV6_TCLASS
			}
			if err := unix.SetsockoptInt(r, level, opt, 1); err != nil {
				t.Fatal(err)
			}
			sendT(t, s, tc.dst(raddr.Port()), []byte("ef"))
			_, _, oob := recvT(t, r)
			h, data, _, err := unix.ParseOneSocketControlMessage(oob)
			if err != nil || int(h.Level) != level || int(h.Type) != typ || len(data) == 0 {
				t.Fatalf("no TOS/TCLASS control message in %x (%v)", oob, err)
			}
			if data[0] != wantTOS {
				t.Errorf("datagram carried TOS %#x, want %#x", data[0], wantTOS)
			}
		})
	}
	t.Run("out of range", func(t *testing.T) {
		fd, _ := sockT(t, "127.0.0.1:0")
		for _, dscp := range []int{-1, 64} {
			if err := SetDSCP(fd, false, dscp); err == nil {
				t.Errorf("SetDSCP(%d) succeeded", dscp)
			}
		}
	})
}

func TestPktInfo(t *testing.T) {
	const lo = 1 // LOOPBACK_IFINDEX: lo is interface 1 in every namespace
	for _, tc := range []struct {
		name, receiver, sender string
		ipv6                   bool
		to, want               string
	}{
		{"ipv4", "127.0.0.1:0", "127.0.0.1:0", false, "127.0.0.1", "127.0.0.1"},
		{"ipv6", "[::1]:0", "[::1]:0", true, "::1", "::1"},
		{"ipv4 on dual-stack", "[::]:0", "127.0.0.1:0", true, "127.0.0.1", "::ffff:127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, raddr := sockT(t, tc.receiver)
			s, _ := sockT(t, tc.sender)
			if err := EnablePktInfo(r, tc.ipv6); err != nil {
				t.Fatal(err)
			}
			sendT(t, s, netip.AddrPortFrom(netip.MustParseAddr(tc.to), raddr.Port()), []byte("x"))
			_, _, oob := recvT(t, r)
			dst, ifindex, ok := ParsePktInfo(oob)
			if !ok || dst != netip.MustParseAddr(tc.want) {
				t.Fatalf("ParsePktInfo = %v, %d, %v; want %s, %d (lo), true", dst, ifindex, ok, tc.want, lo)
			}
			if ifindex == int(bits.ReverseBytes32(lo)) && binary.NativeEndian.Uint16([]byte{0, 1}) == 1 {
				t.Skipf("ifindex %#x is lo's byte-swapped on this big-endian target: the emulator copied the host's control message unconverted", ifindex)
			}
			if ifindex != lo {
				t.Errorf("ParsePktInfo ifindex = %d, want %d (lo)", ifindex, lo)
			}
		})
	}
}

// overflow fills r, whose buffer is the smallest the kernel allows, with
// a burst of datagrams from s, drains it and returns how many were queued.
func overflow(t *testing.T, r, s int, to netip.AddrPort) (burst, queued int) {
	t.Helper()
	if err := unix.SetsockoptInt(r, unix.SOL_SOCKET, unix.SO_RCVBUF, 0); err != nil {
		t.Fatal(err)
	}
	burst = 2000
	for range burst {
		sendT(t, s, to, []byte("burst"))
	}
	var buf [16]byte
	for {
		if _, _, err := unix.Recvfrom(r, buf[:], unix.MSG_DONTWAIT); err != nil {
			return burst, queued
		}
		queued++
	}
}

func TestRxqOvfl(t *testing.T) {
	r, raddr := sockT(t, "127.0.0.1:0")
	s, _ := sockT(t, "127.0.0.1:0")
	err := EnableRxqOvfl(r)
	skipIfUntranslated(t, err)
	if err != nil {
		t.Fatal(err)
	}
	sendT(t, s, raddr, []byte("before"))
	if _, _, oob := recvT(t, r); len(oob) != 0 {
		t.Errorf("control messages before any drop: %x; want none", oob)
	}
	burst, queued := overflow(t, r, s, raddr)
	// A datagram carries the counter as it was when it was queued, so the
	// drained part of the burst carries little or nothing: send one
	// datagram that is queued after all the drops.
	sendT(t, s, raddr, []byte("after"))
	payload, _, oob := recvT(t, r)
	for string(payload) != "after" { // a late part of the burst
		queued++
		payload, _, oob = recvT(t, r)
	}
	dropped, ok := ParseRxqOvfl(oob)
	t.Logf("burst of %d: %d queued, counter %d", burst, queued, dropped)
	if !ok || dropped == 0 || int(dropped)+queued > burst {
		t.Errorf("ParseRxqOvfl = %d, %v; want 1..%d (%d of %d queued)", dropped, ok, burst-queued, queued, burst)
	}
	d, err := Drops(r)
	skipIfUntranslated(t, err)
	if err != nil || d != dropped {
		t.Errorf("Drops = %d, %v; the datagram's counter says %d", d, err, dropped)
	}
}

func TestDrops(t *testing.T) {
	r, raddr := sockT(t, "127.0.0.1:0")
	s, _ := sockT(t, "127.0.0.1:0")
	d, err := Drops(r)
	skipIfUntranslated(t, err)
	if err != nil || d != 0 {
		t.Fatalf("Drops on a new socket = %d, %v; want 0", d, err)
	}
	burst, queued := overflow(t, r, s, raddr)
	d, err = Drops(r)
	t.Logf("burst of %d: %d queued, %d dropped", burst, queued, d)
	if err != nil || d == 0 || int(d)+queued > burst {
		t.Errorf("Drops = %d, %v; want 1..%d", d, err, burst-queued)
	}
	if _, err := Drops(-1); err == nil {
		t.Error("Drops(-1) succeeded")
	}
}

func TestOOBSpace(t *testing.T) {
	want := unix.CmsgSpace(unix.SizeofInet6Pktinfo) + unix.CmsgSpace(unix.SizeofInet4Pktinfo) + unix.CmsgSpace(4)
	if OOBSpace != want {
		t.Errorf("OOBSpace = %d, CMSG_SPACE sum = %d", OOBSpace, want)
	}
}

func TestParsePktInfoBuilt(t *testing.T) {
	for _, tc := range []struct {
		oob  []byte
		want netip.Addr
	}{
		{unix.PktInfo4(&unix.Inet4Pktinfo{Ifindex: 7, Spec_dst: [4]byte{192, 0, 2, 9}, Addr: [4]byte{192, 0, 2, 1}}), netip.MustParseAddr("192.0.2.1")},
		{unix.PktInfo6(&unix.Inet6Pktinfo{Ifindex: 7, Addr: netip.MustParseAddr("2001:db8::1").As16()}), netip.MustParseAddr("2001:db8::1")},
	} {
		if dst, ifindex, ok := ParsePktInfo(tc.oob); !ok || dst != tc.want || ifindex != 7 {
			t.Errorf("ParsePktInfo(%x) = %v, %d, %v; want %v, 7, true", tc.oob, dst, ifindex, ok, tc.want)
		}
	}
}

// cmsgT encodes one control message as the kernel lays it out.
func cmsgT(level, typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	const lenSize = unix.SizeofCmsghdr - 8
	if lenSize == 8 {
		binary.NativeEndian.PutUint64(b, uint64(unix.CmsgLen(len(data))))
	} else {
		binary.NativeEndian.PutUint32(b, uint32(unix.CmsgLen(len(data))))
	}
	binary.NativeEndian.PutUint32(b[lenSize:], uint32(level))
	binary.NativeEndian.PutUint32(b[lenSize+4:], uint32(typ))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

func TestParseSeveralControlMessages(t *testing.T) {
	pkt := unix.PktInfo6(&unix.Inet6Pktinfo{Ifindex: 3, Addr: netip.MustParseAddr("2001:db8::1").As16()})
	ovfl := cmsgT(unix.SOL_SOCKET, unix.SO_RXQ_OVFL, binary.NativeEndian.AppendUint32(nil, 7))
	for _, tc := range []struct {
		name           string
		oob            []byte
		wantPkt, wantN bool
	}{
		{"pktinfo, rxq_ovfl", append(append([]byte{}, pkt...), ovfl...), true, true},
		{"rxq_ovfl, pktinfo", append(append([]byte{}, ovfl...), pkt...), true, true},
		{"second truncated", append(append([]byte{}, ovfl...), pkt[:len(pkt)-8]...), false, true},
		{"first without padding", ovfl[:unix.CmsgLen(4)], false, true},
		{"first truncated", ovfl[:unix.CmsgLen(4)-1], false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst, ifindex, ok := ParsePktInfo(tc.oob)
			if ok != tc.wantPkt || ok && (dst != netip.MustParseAddr("2001:db8::1") || ifindex != 3) {
				t.Errorf("ParsePktInfo = %v, %d, %v; want found = %v", dst, ifindex, ok, tc.wantPkt)
			}
			n, ok := ParseRxqOvfl(tc.oob)
			if ok != tc.wantN || ok && n != 7 {
				t.Errorf("ParseRxqOvfl = %d, %v; want found = %v", n, ok, tc.wantN)
			}
		})
	}
}

func TestParseControlMessagesAbsentOrMalformed(t *testing.T) {
	for _, oob := range [][]byte{nil, {1, 2, 3}, bytes.Repeat([]byte{0xff}, OOBSpace)} {
		if _, _, ok := ParsePktInfo(oob); ok {
			t.Errorf("ParsePktInfo(%x) found packet info", oob)
		}
		if _, ok := ParseRxqOvfl(oob); ok {
			t.Errorf("ParseRxqOvfl(%x) found a counter", oob)
		}
	}
}

func FuzzParseControlMessages(f *testing.F) {
	f.Add([]byte{})
	f.Add(unix.PktInfo4(&unix.Inet4Pktinfo{Ifindex: 1, Addr: [4]byte{127, 0, 0, 1}}))
	f.Add(unix.PktInfo6(&unix.Inet6Pktinfo{Ifindex: 1, Addr: [16]byte{15: 1}}))
	f.Add(cmsgT(unix.SOL_SOCKET, unix.SO_RXQ_OVFL, []byte{1, 0, 0, 0}))
	f.Add(cmsgT(unix.SOL_IP, unix.IP_ORIGDSTADDR, []byte{2, 0, 0x67, 0x2b, 192, 0, 2, 9, 0, 0, 0, 0, 0, 0, 0, 0}))
	f.Fuzz(func(t *testing.T, oob []byte) {
		ParsePktInfo(oob)
		ParseRxqOvfl(oob)
		ParseOrigDst(oob)
	})
}
