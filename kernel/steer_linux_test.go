package kernel

import (
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

// TestSteering sends datagrams to ports no socket is bound to: the
// sk_lookup program hands each to socket (port mod 2) of its map, the
// receiver learns the port from IP_ORIGDSTADDR, a port outside the range is
// not steered, and after Close nothing is.
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
	// recv waits (bounded) for one datagram on fd.
	recv := func(fd int, wait time.Duration) (string, netip.AddrPort, bool) {
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

	for _, port := range []int{steerMin, steerMin + 1, steerMin + 50, steerMax} {
		send(port, "to-port")
		got, dst, ok := recv(socks[port%2], 5*time.Second)
		if !ok {
			t.Fatalf("datagram to port %d did not reach socket %d", port, port%2)
		}
		if got != "to-port" || dst != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)) {
			t.Fatalf("port %d: received %q addressed to %s", port, got, dst)
		}
	}
	// Outside the range: the ordinary lookup finds no socket.
	send(steerMax+1, "outside")
	for i, fd := range socks {
		if got, dst, ok := recv(fd, 100*time.Millisecond); ok {
			t.Fatalf("socket %d received %q for %s, outside the steered range", i, got, dst)
		}
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
	p := steeringProgram(netip.MustParseAddr("10.0.0.1"), 20000, 29999, 4, 3)
	if last := p[len(p)-1]; last.Code != ebpf.OpExit {
		t.Fatalf("program ends with opcode %#x, not exit", last.Code)
	}
	// Every jump lands on the final "r0 = SK_PASS".
	pass := len(p) - 2
	for i, in := range p {
		switch in.Code {
		case ebpf.OpJeqImm, ebpf.OpJneImm, ebpf.OpJgtImm, ebpf.OpJltImm:
			if i+1+int(in.Off) != pass {
				t.Errorf("jump at %d lands on %d, want %d", i, i+1+int(in.Off), pass)
			}
		}
	}
	if anyAddr := steeringProgram(netip.IPv4Unspecified(), 20000, 29999, 4, 3); len(anyAddr) != len(p)-2 {
		t.Errorf("unspecified address: %d instructions, want %d (no address check)", len(anyAddr), len(p)-2)
	}
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
