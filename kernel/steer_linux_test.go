package kernel

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		t.Skipf("sk_lookup unavailable here (Linux ≥ 5.9 with BPF): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	var socks [2]int
	for i := range socks {
		fd, err := OpenUDP(netip.MustParseAddrPort("127.0.0.1:0"))
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
	if last := p[len(p)-1]; last.code != opExit {
		t.Fatalf("program ends with opcode %#x, not exit", last.code)
	}
	// Every jump lands on the final "r0 = SK_PASS".
	pass := len(p) - 2
	for i, in := range p {
		switch in.code {
		case opJeqImm, opJneImm, opJgtImm, opJltImm:
			if i+1+int(in.off) != pass {
				t.Errorf("jump at %d lands on %d, want %d", i, i+1+int(in.off), pass)
			}
		}
	}
	if anyAddr := steeringProgram(netip.IPv4Unspecified(), 20000, 29999, 4, 3); len(anyAddr) != len(p)-2 {
		t.Errorf("unspecified address: %d instructions, want %d (no address check)", len(anyAddr), len(p)-2)
	}
}
