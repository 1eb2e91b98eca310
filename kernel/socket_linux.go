package kernel

import (
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openUDP returns a non-blocking, close-on-exec UDP socket bound to addr
// (IPv4 or IPv6 by the address's family; an IPv6 socket is v6-only so it
// never shadows a separate IPv4 bind of the same port).
func openUDP(addr netip.AddrPort) (int, error) {
	family := unix.AF_INET
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("udp socket for %s: %w", addr, err)
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("set IPV6_V6ONLY on %s: %w", addr, err)
		}
	}
	var sa sockaddr
	salen := sa.set(addr)
	if _, _, errno := unix.RawSyscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&sa)), uintptr(salen)); errno != 0 {
		unix.Close(fd)
		return -1, fmt.Errorf("bind udp %s: %w", addr, errno)
	}
	return fd, nil
}

// sockaddr is a raw socket address big enough for IPv4 and IPv6, filled
// without allocating (unix.Sockaddr values allocate on every call).
type sockaddr struct {
	raw unix.RawSockaddrInet6
}

// set stores a and returns the length to pass to the kernel.
func (s *sockaddr) set(a netip.AddrPort) uint32 {
	ip := a.Addr()
	if ip.Is4() || ip.Is4In6() {
		v4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&s.raw))
		*v4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ip.Unmap().As4()}
		putPort(&v4.Port, a.Port())
		return unix.SizeofSockaddrInet4
	}
	s.raw = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ip.As16()}
	putPort(&s.raw.Port, a.Port())
	return unix.SizeofSockaddrInet6
}

// addrPort decodes the address the kernel stored; ok is false for
// families other than IPv4 and IPv6.
func (s *sockaddr) addrPort() (netip.AddrPort, bool) {
	switch s.raw.Family {
	case unix.AF_INET:
		v4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&s.raw))
		return netip.AddrPortFrom(netip.AddrFrom4(v4.Addr), getPort(&v4.Port)), true
	case unix.AF_INET6:
		ip := netip.AddrFrom16(s.raw.Addr)
		if s.raw.Scope_id != 0 {
			// Link-local peers: keep the zone so replies go out the right
			// interface. Rare on a relay; allocation is acceptable there.
			ip = ip.WithZone(fmt.Sprint(s.raw.Scope_id))
		}
		return netip.AddrPortFrom(ip, getPort(&s.raw.Port)), true
	}
	return netip.AddrPort{}, false
}

// Ports in socket addresses are in network byte order whatever the host's.
func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

func getPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// LocalPort returns the port fd is bound to.
func LocalPort(fd int) (int, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, fmt.Errorf("getsockname fd %d: %w", fd, err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return sa.Port, nil
	case *unix.SockaddrInet6:
		return sa.Port, nil
	}
	return 0, fmt.Errorf("fd %d is not an IP socket", fd)
}
