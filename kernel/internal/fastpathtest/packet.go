package fastpathtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// IPv4UDP builds an IPv4 datagram (20-byte header, DF) carrying a UDP
// one from src to dst, both checksums computed.
func IPv4UDP(src, dst netip.AddrPort, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0], p[6], p[8], p[9] = 0x45, 0x40, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], ^fold(sum(p[:20])))
	binary.BigEndian.PutUint16(p[20:], src.Port())
	binary.BigEndian.PutUint16(p[22:], dst.Port())
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	c := ^fold(pseudo(p) + sum(p[20:]))
	if c == 0 {
		c = 0xffff // 0 would say "no checksum"
	}
	binary.BigEndian.PutUint16(p[26:], c)
	return p
}

// ParseIPv4UDP returns the addresses and payload of an IPv4 datagram
// with a 20-byte header carrying UDP, after checking both checksums (a
// zero UDP checksum, "none", is accepted). ok is false for a packet that
// is not IPv4 UDP; err reports a broken one.
func ParseIPv4UDP(p []byte) (src, dst netip.AddrPort, payload []byte, ok bool, err error) {
	if len(p) < 28 || p[0] != 0x45 || p[9] != unix.IPPROTO_UDP {
		return src, dst, nil, false, nil
	}
	if int(binary.BigEndian.Uint16(p[2:])) != len(p) || int(binary.BigEndian.Uint16(p[24:])) != len(p)-20 {
		return src, dst, nil, true, fmt.Errorf("lengths: IP %d, UDP %d, packet %d", binary.BigEndian.Uint16(p[2:]), binary.BigEndian.Uint16(p[24:]), len(p))
	}
	if fold(sum(p[:20])) != 0xffff {
		return src, dst, nil, true, errors.New("bad IPv4 header checksum")
	}
	if binary.BigEndian.Uint16(p[26:]) != 0 && fold(pseudo(p)+sum(p[20:])) != 0xffff {
		return src, dst, nil, true, errors.New("bad UDP checksum")
	}
	src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(p[12:16])), binary.BigEndian.Uint16(p[20:]))
	dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(p[16:20])), binary.BigEndian.Uint16(p[22:]))
	return src, dst, p[28:], true, nil
}

func sum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

// pseudo is the UDP pseudo-header's sum of an IPv4 datagram.
func pseudo(p []byte) uint32 {
	return sum(p[12:20]) + unix.IPPROTO_UDP + uint32(len(p)-20)
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// Tun is a tun device (IFF_TUN: packets start at the IP header, as on
// PPP and WireGuard) in a namespace; the test is what lies beyond it.
type Tun struct{ f *os.File }

// NewTun creates tun device name in namespace ns, closed at cleanup.
func NewTun(t *testing.T, ns, name string) *Tun {
	t.Helper()
	var f *os.File
	In(t, ns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if errors.Is(err, unix.ENOENT) {
			// A minimal /dev (some containers) lacks the node; the
			// kernel's tun driver is there all the same (misc 10:200).
			if err = os.MkdirAll("/dev/net", 0o755); err == nil {
				err = unix.Mknod("/dev/net/tun", unix.S_IFCHR|0o666, int(unix.Mkdev(10, 200)))
			}
			if err == nil {
				fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
			}
		}
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF: %w", err)
		}
		f = os.NewFile(uintptr(fd), name) // non-blocking: read deadlines work
		return nil
	})
	t.Cleanup(func() { f.Close() })
	return &Tun{f: f}
}

// Write sends a packet into the namespace, as if it arrived on the link.
func (tn *Tun) Write(t *testing.T, p []byte) {
	t.Helper()
	if _, err := tn.f.Write(p); err != nil {
		t.Fatal(err)
	}
}

// nextUDP returns the next IPv4 UDP packet the namespace sends out over
// the device within wait, skipping anything else it may send (IPv6
// router solicitations, say).
func (tn *Tun) nextUDP(wait time.Duration) ([]byte, error) {
	buf := make([]byte, 2048)
	tn.f.SetReadDeadline(time.Now().Add(wait))
	for {
		n, err := tn.f.Read(buf)
		if err != nil {
			return nil, err
		}
		if _, _, _, ok, _ := ParseIPv4UDP(buf[:n]); ok {
			return buf[:n], nil
		}
	}
}

// Expect checks that the next IPv4 UDP datagram out over the device has
// correct checksums and carries payload from src to dst.
func (tn *Tun) Expect(t *testing.T, payload []byte, src, dst netip.AddrPort) {
	t.Helper()
	p, err := tn.nextUDP(2 * time.Second)
	if err != nil {
		t.Fatalf("tun: no datagram (want %d bytes %s -> %s): %v", len(payload), src, dst, err)
	}
	s, d, got, _, err := ParseIPv4UDP(p)
	if err != nil {
		t.Fatalf("tun: %s -> %s: %v", s, d, err)
	}
	if s != src || d != dst || string(got) != string(payload) {
		t.Fatalf("tun: got %d bytes %s -> %s, want %d bytes %s -> %s", len(got), s, d, len(payload), src, dst)
	}
}

// ExpectNone checks that no IPv4 UDP datagram leaves by the device
// within the wait of the package's ExpectNone.
func (tn *Tun) ExpectNone(t *testing.T) {
	t.Helper()
	if p, err := tn.nextUDP(noneWait); err == nil {
		s, d, _, _, _ := ParseIPv4UDP(p)
		t.Fatalf("tun: unexpected datagram %s -> %s", s, d)
	}
}
