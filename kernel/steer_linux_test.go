package kernel

import (
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel/internal/ebpf"
)

// The steered range is on 127.0.0.1 only and below the ephemeral ports, so
// nothing else on the host is affected while the test runs.
const steerMin, steerMax = 26400, 26499

// TestSteering sends datagrams to held ports no socket is bound to: the
// sk_lookup program hands each to socket (port mod 2) of its map, the
// receiver learns the port from IP_ORIGDSTADDR; a port outside the range
// is not steered, nor is a port of the range that is not held (another
// program's socket bound there keeps its datagrams), nor a released one,
// and after Close nothing is.
func TestSteering(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_BPF and CAP_NET_ADMIN) to attach an sk_lookup program")
	}
	s, err := NewSteering(netip.MustParseAddr("127.0.0.1"), steerMin, steerMax, 2)
	if SteeringUnsupported(err) {
		t.Skipf("sk_lookup unavailable here (Linux ≥ 5.9 with BPF): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	var socks [2]int
	for i := range socks {
		fd, err := openUDP(netip.MustParseAddrPort("127.0.0.1:0"))
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if err := EnableOrigDst(fd); err != nil {
			t.Fatal(err)
		}
		if err := s.SetSocket(i, fd); err != nil {
			t.Fatal(err)
		}
		socks[i] = fd
	}
	client, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(client)
	send := func(port int, payload string) {
		t.Helper()
		if err := unix.Sendto(client, []byte(payload), 0, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Fatalf("send to port %d: %v", port, err)
		}
	}
	recv := func(fd int, wait time.Duration) (string, netip.AddrPort, bool) {
		t.Helper()
		return recvSteered(t, fd, wait)
	}

	held := []int{steerMin, steerMin + 1, steerMin + 50, steerMax}
	for _, port := range held {
		if err := s.Hold(port); err != nil {
			t.Fatal(err)
		}
	}
	for _, port := range held {
		send(port, "to-port")
		got, dst, ok := recv(socks[port%2], 5*time.Second)
		if !ok {
			t.Fatalf("datagram to port %d did not reach socket %d", port, port%2)
		}
		if got != "to-port" || dst != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)) {
			t.Fatalf("port %d: received %q addressed to %s", port, got, dst)
		}
	}
	// Outside the range, or not held: the ordinary lookup, which finds
	// another program's socket where there is one.
	other := testUDP(t, fmt.Sprintf("127.0.0.1:%d", steerMin+2))
	send(steerMax+1, "outside")
	send(steerMin+3, "not-held")
	send(steerMin+2, "to-other")
	for i, fd := range socks {
		if got, dst, ok := recv(fd, 100*time.Millisecond); ok {
			t.Fatalf("socket %d received %q for %s: not a held port of the range", i, got, dst)
		}
	}
	buf := make([]byte, 64)
	unix.Poll([]unix.PollFd{{Fd: int32(other), Events: unix.POLLIN}}, 5000)
	if n, _, err := unix.Recvfrom(other, buf, unix.MSG_DONTWAIT); err != nil || string(buf[:max(n, 0)]) != "to-other" {
		t.Fatalf("another program's socket in the range received %q (%v), want \"to-other\"", buf[:max(n, 0)], err)
	}
	if err := s.Release(steerMin); err != nil {
		t.Fatal(err)
	}
	send(steerMin, "released")
	if got, _, ok := recv(socks[0], 100*time.Millisecond); ok {
		t.Fatalf("a released port was steered (%q)", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	send(steerMin, "after-close")
	for i, fd := range socks {
		if got, _, ok := recv(fd, 100*time.Millisecond); ok {
			t.Fatalf("socket %d received %q after the program was detached", i, got)
		}
	}
}

func TestSteeringProgramShape(t *testing.T) {
	p := steeringProgram(netip.MustParseAddr("10.0.0.1"), 20000, 29999, 4, 3, 5)
	if last := p[len(p)-1]; last.Code != ebpf.OpExit {
		t.Fatalf("program ends with opcode %#x, not exit", last.Code)
	}
	// Every jump lands inside the program, forward (no loops).
	for i, in := range p {
		switch in.Code {
		case ebpf.OpJeqImm, ebpf.OpJneImm, ebpf.OpJgtImm, ebpf.OpJltImm, ebpf.OpJneReg, ebpf.OpJa:
			if to := i + 1 + int(in.Off); in.Off < 0 || to >= len(p) {
				t.Errorf("jump at %d lands on %d, outside 0-%d or backward", i, to, len(p)-1)
			}
		}
	}
	if anyAddr := steeringProgram(netip.IPv4Unspecified(), 20000, 29999, 4, 3, 5); len(anyAddr) != len(p)-2 {
		t.Errorf("unspecified address: %d instructions, want %d (no address check)", len(anyAddr), len(p)-2)
	}
}

// TestSteeringShield shields a steered port for one source: another
// source's datagrams (another port of the same address, or the same port
// of another address) are dropped in the kernel and counted, without an
// ICMP answer; the shielded source, and other held ports, are steered
// as before; after Unshield every source is again.
func TestSteeringShield(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_BPF and CAP_NET_ADMIN) to attach an sk_lookup program")
	}
	s, err := NewSteering(netip.MustParseAddr("127.0.0.1"), steerMin, steerMax, 1)
	if SteeringUnsupported(err) {
		t.Skipf("sk_lookup unavailable here (Linux ≥ 5.9 with BPF): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recvSock, err := openUDP(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(recvSock)
	if err := EnableOrigDst(recvSock); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSocket(0, recvSock); err != nil {
		t.Fatal(err)
	}
	latched := testUDP(t, "127.0.0.1:0")
	samePort := testUDP(t, "127.0.0.2:"+fmt.Sprint(localPort(t, latched)))
	otherPort := testUDP(t, "127.0.0.1:0")
	const port = steerMin + 7
	to := &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
	// The intruder's socket is connected: an ICMP port unreachable
	// would set its error (ECONNREFUSED on the next send).
	if err := unix.Connect(otherPort, to); err != nil {
		t.Fatal(err)
	}
	latchedSrc := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(localPort(t, latched)))
	if err := s.Shield(port, latchedSrc); err == nil {
		t.Fatal("a port not held was shielded")
	}
	for _, p := range []int{port, port + 1} {
		if err := s.Hold(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Shield(port, latchedSrc); err != nil {
		t.Fatal(err)
	}

	const flood = 40
	for i := range flood {
		if err := unix.Send(otherPort, []byte("evil"), 0); err != nil {
			t.Fatalf("intruder's send %d: %v (an ICMP answer to a shield drop?)", i, err)
		}
		if err := unix.Sendto(samePort, []byte("evil"), 0, to); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Sendto(latched, []byte("latched"), 0, to); err != nil {
		t.Fatal(err)
	}
	if got, _, ok := recvSteered(t, recvSock, 5*time.Second); !ok || got != "latched" {
		t.Fatalf("the shielded port's own source: received %q (%v), want \"latched\" first", got, ok)
	}
	var drops uint64
	for deadline := time.Now().Add(5 * time.Second); drops < 2*flood && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if drops, err = s.ShieldDrops(port); err != nil {
			t.Fatal(err)
		}
	}
	if drops != 2*flood {
		t.Fatalf("shield counted %d drops, want %d", drops, 2*flood)
	}
	if sink, err := s.SinkDrops(); err == nil && sink != 2*flood {
		t.Errorf("the sink socket dropped %d, the shield counted %d", sink, drops)
	}
	if e, err := unix.GetsockoptInt(otherPort, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || e != 0 {
		t.Errorf("intruder's socket error %d (%v): the kernel answered the drops", e, err)
	}
	// Another port of the range is not shielded.
	if err := unix.Sendto(samePort, []byte("elsewhere"), 0, &unix.SockaddrInet4{Port: port + 1, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if got, dst, ok := recvSteered(t, recvSock, 5*time.Second); !ok || got != "elsewhere" || dst.Port() != port+1 {
		t.Fatalf("unshielded port: received %q for %s (%v)", got, dst, ok)
	}
	if err := s.Unshield(port); err != nil {
		t.Fatal(err)
	}
	if err := s.Unshield(port); err != nil {
		t.Fatalf("second unshield: %v", err)
	}
	if err := unix.Send(otherPort, []byte("after"), 0); err != nil {
		t.Fatal(err)
	}
	if got, _, ok := recvSteered(t, recvSock, 5*time.Second); !ok || got != "after" {
		t.Fatalf("after Unshield: received %q (%v)", got, ok)
	}
	if d, err := s.ShieldDrops(port); err != nil || d != 0 {
		t.Errorf("an unshielded port reports %d drops (%v)", d, err)
	}
	if err := s.Shield(port, netip.MustParseAddrPort("[::1]:5000")); err == nil {
		t.Error("an IPv6 source was accepted")
	}
}

// testUDP opens an IPv4 UDP socket bound to addr, closed at cleanup.
func testUDP(t *testing.T, addr string) int {
	t.Helper()
	fd, err := openUDP(netip.MustParseAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func localPort(t *testing.T, fd int) int {
	t.Helper()
	p, err := LocalPort(fd)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// recvSteered waits (bounded) for one datagram on fd and its original
// destination.
func recvSteered(t *testing.T, fd int, wait time.Duration) (string, netip.AddrPort, bool) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, int(wait.Milliseconds())); err != nil || n == 0 {
		return "", netip.AddrPort{}, false
	}
	buf, oob := make([]byte, 64), make([]byte, 128)
	n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_DONTWAIT)
	if err != nil {
		t.Fatalf("recvmsg: %v", err)
	}
	dst, ok := ParseOrigDst(oob[:oobn])
	if !ok {
		t.Fatal("no IP_ORIGDSTADDR control message")
	}
	return string(buf[:n]), dst, true
}

// TestRecvBatchOrigDst receives a batch with control data: each datagram's
// IP_ORIGDSTADDR says the port it was sent to (here the socket's own).
func TestRecvBatchOrigDst(t *testing.T) {
	fd, err := openUDP(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := EnableOrigDst(fd); err != nil {
		skipIfUntranslated(t, err)
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	port := sa.(*unix.SockaddrInet4).Port
	client, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(client)
	for range 3 {
		if err := unix.Sendto(client, []byte("x"), 0, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Fatal(err)
		}
	}
	b := NewRecvBatch(8, 64).WithControl(64)
	got := 0
	for deadline := time.Now().Add(5 * time.Second); got < 3 && time.Now().Before(deadline); {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		unix.Poll(fds, 1000)
		n, err := b.Recv(fd)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			dst, ok := ParseOrigDst(b.Control(i))
			if !ok || dst != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)) {
				t.Fatalf("datagram %d: original destination %s (%v), want 127.0.0.1:%d", got+i, dst, ok, port)
			}
		}
		got += n
	}
	if got != 3 {
		t.Fatalf("received %d of 3 datagrams", got)
	}
	if allocs := testing.AllocsPerRun(100, func() { ParseOrigDst(b.Control(0)) }); allocs != 0 {
		t.Errorf("ParseOrigDst allocates %.0f times per call", allocs)
	}
}

// TestParseOrigDstMalformed: truncated or lying control data is refused,
// never read past.
func TestParseOrigDstMalformed(t *testing.T) {
	good := make([]byte, unix.CmsgSpace(unix.SizeofSockaddrInet4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&good[0]))
	h.Level, h.Type = unix.SOL_IP, unix.IP_ORIGDSTADDR
	h.SetLen(unix.CmsgLen(unix.SizeofSockaddrInet4))
	data := good[unix.CmsgLen(0):]
	data[2], data[3] = 0x67, 0x2b // port 26411
	copy(data[4:8], []byte{192, 0, 2, 9})
	if dst, ok := ParseOrigDst(good); !ok || dst != netip.MustParseAddrPort("192.0.2.9:26411") {
		t.Fatalf("well-formed message: %s %v", dst, ok)
	}
	for name, oob := range map[string][]byte{
		"empty":     nil,
		"truncated": good[:unix.CmsgLen(0)+4],
		"short":     good[:4],
	} {
		if dst, ok := ParseOrigDst(oob); ok {
			t.Errorf("%s: parsed %s", name, dst)
		}
	}
	bad := append([]byte(nil), good...)
	(*unix.Cmsghdr)(unsafe.Pointer(&bad[0])).SetLen(len(bad) + 64)
	if _, ok := ParseOrigDst(bad); ok {
		t.Error("a length past the buffer was accepted")
	}
	other := append([]byte(nil), good...)
	(*unix.Cmsghdr)(unsafe.Pointer(&other[0])).Type = unix.IP_TOS
	if _, ok := ParseOrigDst(other); ok {
		t.Error("another message type was read as the original destination")
	}
}
