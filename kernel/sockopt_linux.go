package kernel

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Per-socket buffer policy for BufferSizeFor. The values are what is
// requested; Linux doubles them (half is bookkeeping overhead).
const (
	// bufferBudget bounds the sum of requested receive buffers. 32 MiB
	// (64 MiB of kernel limit after doubling) is what a 256 MB router can
	// afford for the rare moment when every socket is full at once.
	bufferBudget = 32 << 20
	// maxSocketBuffer absorbs a video keyframe burst (≈ 100 datagrams of
	// 1,200 bytes, ≈ 2 KiB of truesize each) on one port.
	maxSocketBuffer = 256 << 10
	// minSocketBuffer queues ≈ 60–160 small audio datagrams: seconds of
	// one ordinary stream, and ≈ 10 ms of a 10,000 packet/s hot flow while
	// the relay is busy (the first benchmark lost packets of such a flow
	// with 16 KiB).
	minSocketBuffer = 64 << 10
)

// HotFlowBuffer is the buffer size for a port that carries a hot flow (a
// video stream, a trunk of calls from one peer): 1 MiB queues ≈ 1,300
// small datagrams, ≈ 13 ms of a 100,000 packet/s flow while the relay is
// busy elsewhere. Only ports that prove hot get it, so the range-wide
// sizing above stays what it is. Without CAP_NET_ADMIN the kernel caps it
// at net.core.rmem_max / wmem_max.
const HotFlowBuffer = 1 << 20

// BufferSizeFor returns the receive (and send) buffer size to request with
// SetBuffers for each of sockets sockets: maxSocketBuffer (256 KiB) while
// the total stays within a 32 MiB budget (up to 128 sockets, 32 channels),
// then budget/sockets, never below minSocketBuffer (64 KiB, reached at
// 512 sockets). Past that the sum of limits grows again (40,000 sockets ×
// 64 KiB = 2.4 GiB requested), but those are limits, not allocations: memory
// is charged only for queued datagrams, and net.ipv4.udp_mem caps all UDP
// sockets together, so the floor only says how much one port may queue.
func BufferSizeFor(sockets int) int {
	if sockets < 1 {
		sockets = 1
	}
	return min(max(bufferBudget/sockets, minSocketBuffer), maxSocketBuffer)
}

// SetBuffers sets the receive and send buffer sizes of fd and returns what
// the kernel actually applied, as read back with getsockopt: Linux stores
// (and reports) twice the requested value, keeping half for overhead. A size
// of zero or less leaves that buffer unchanged.
//
// SO_RCVBUFFORCE/SO_SNDBUFFORCE are tried first: they ignore
// net.core.rmem_max/wmem_max but need CAP_NET_ADMIN. Without it the plain
// options are used and the kernel silently caps the size at the sysctl
// maximum, which is why the applied size is returned rather than assumed.
func SetBuffers(fd, rcv, snd int) (gotRcv, gotSnd int, err error) {
	if rcv > 0 {
		if err := setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, "SO_RCVBUF", rcv); err != nil {
			return 0, 0, err
		}
	}
	if snd > 0 {
		if err := setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, "SO_SNDBUF", snd); err != nil {
			return 0, 0, err
		}
	}
	if gotRcv, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF); err != nil {
		return 0, 0, fmt.Errorf("get SO_RCVBUF on fd %d: %w", fd, err)
	}
	if gotSnd, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF); err != nil {
		return 0, 0, fmt.Errorf("get SO_SNDBUF on fd %d: %w", fd, err)
	}
	return gotRcv, gotSnd, nil
}

// setBuffer tries the privileged force option, then the capped one.
func setBuffer(fd, force, plain int, name string, size int) error {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size) == nil {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size); err != nil {
		return fmt.Errorf("set %s to %d on fd %d: %w", name, size, fd, err)
	}
	return nil
}

// DSCPExpeditedForwarding is the DiffServ code point for voice (RFC 3246),
// TOS byte 0xB8. Home routers and Wi-Fi WMM map it to their voice queue.
const DSCPExpeditedForwarding = 46

// SetDSCP marks every datagram fd sends with the DiffServ code point dscp
// (0–63); the ECN bits are left zero (Not-ECT). For an IPv6 socket it sets
// IPV6_TCLASS and also IP_TOS, because a dual-stack socket's datagrams to
// IPv4-mapped addresses leave as IPv4 and take their mark from IP_TOS only.
func SetDSCP(fd int, ipv6 bool, dscp int) error {
	if dscp < 0 || dscp > 63 {
		return fmt.Errorf("set DSCP %d on fd %d: out of range 0-63", dscp, fd)
	}
	tos := dscp << 2
	if ipv6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, tos); err != nil {
			return fmt.Errorf("set IPV6_TCLASS %#x on fd %d: %w", tos, fd, err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS, tos); err != nil {
		return fmt.Errorf("set IP_TOS %#x on fd %d: %w", tos, fd, err)
	}
	return nil
}

// EnablePktInfo asks the kernel to attach the destination address and the
// arrival interface to every datagram fd receives (see ParsePktInfo), so a
// relay bound to a wildcard address can answer from the address the peer
// used. For an IPv6 socket it sets IPV6_RECVPKTINFO, which also covers IPv4
// datagrams on a dual-stack socket (reported as IPv4-mapped addresses).
func EnablePktInfo(fd int, ipv6 bool) error {
	if ipv6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
			return fmt.Errorf("set IPV6_RECVPKTINFO on fd %d: %w", fd, err)
		}
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil {
		return fmt.Errorf("set IP_PKTINFO on fd %d: %w", fd, err)
	}
	return nil
}

// ParsePktInfo finds an IP_PKTINFO or IPV6_PKTINFO control message in oob
// (the control bytes returned by recvmsg) and returns the datagram's
// destination address as it was in the IP header, and the index of the
// interface it arrived on. An IPv4 datagram on a dual-stack socket yields an
// IPv4-mapped address; call Unmap to compare it with IPv4 addresses. ok is
// false if there is no such message.
func ParsePktInfo(oob []byte) (dst netip.Addr, ifindex int, ok bool) {
	// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
	if data := controlMessage(oob, unix.IPPROTO_IP, unix.IP_PKTINFO); len(data) >= unix.SizeofInet4Pktinfo {
		return netip.AddrFrom4([4]byte(data[8:12])), int(int32(binary.NativeEndian.Uint32(data[0:4]))), true
	}
	// struct in6_pktinfo { in6_addr addr; int ifindex; }
	if data := controlMessage(oob, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO); len(data) >= unix.SizeofInet6Pktinfo {
		return netip.AddrFrom16([16]byte(data[0:16])), int(int32(binary.NativeEndian.Uint32(data[16:20]))), true
	}
	return netip.Addr{}, 0, false
}

// EnableRxqOvfl makes the kernel attach the socket's drop counter to
// received datagrams (see ParseRxqOvfl). The counter (sk_drops) counts
// datagrams dropped because the receive buffer was full and also those
// rejected by a socket filter such as AttachSourceFilter.
func EnableRxqOvfl(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1); err != nil {
		return fmt.Errorf("set SO_RXQ_OVFL on fd %d: %w", fd, err)
	}
	return nil
}

// ParseRxqOvfl finds the SO_RXQ_OVFL control message in oob and returns the
// socket's cumulative drop count as it was when this datagram was queued.
// The kernel omits the message while the count is zero, so ok == false after
// EnableRxqOvfl means "no drop yet". The count is 32 bits and wraps.
func ParseRxqOvfl(oob []byte) (dropped uint32, ok bool) {
	if data := controlMessage(oob, unix.SOL_SOCKET, unix.SO_RXQ_OVFL); len(data) >= 4 {
		return binary.NativeEndian.Uint32(data), true
	}
	return 0, false
}

// Control-message sizes, as CMSG_SPACE computes them for this architecture.
const (
	cmsgAlign    = unix.SizeofPtr
	cmsgHdrSpace = (unix.SizeofCmsghdr + cmsgAlign - 1) &^ (cmsgAlign - 1)
	pktInfo6Size = cmsgHdrSpace + (unix.SizeofInet6Pktinfo+cmsgAlign-1)&^(cmsgAlign-1)
	pktInfo4Size = cmsgHdrSpace + (unix.SizeofInet4Pktinfo+cmsgAlign-1)&^(cmsgAlign-1)
	rxqOvflSize  = cmsgHdrSpace + (4+cmsgAlign-1)&^(cmsgAlign-1)
)

// controlMessage returns the data of the first control message in oob
// with the given level and type, or nil. It decodes the headers instead of
// casting pointers into oob (as unix.ParseOneSocketControlMessage does), so
// a short or misaligned buffer is never read out of bounds.
func controlMessage(oob []byte, level, typ int) []byte {
	const lenSize = unix.SizeofCmsghdr - 8 // size_t cmsg_len; int cmsg_level, cmsg_type
	for len(oob) >= unix.SizeofCmsghdr {
		var n uint64
		if lenSize == 8 {
			n = binary.NativeEndian.Uint64(oob)
		} else {
			n = uint64(binary.NativeEndian.Uint32(oob))
		}
		if n < cmsgHdrSpace || n > uint64(len(oob)) {
			return nil
		}
		l := int32(binary.NativeEndian.Uint32(oob[lenSize:]))
		t := int32(binary.NativeEndian.Uint32(oob[lenSize+4:]))
		if int(l) == level && int(t) == typ {
			return oob[cmsgHdrSpace:n]
		}
		next := (n + cmsgAlign - 1) &^ (cmsgAlign - 1)
		if next >= uint64(len(oob)) {
			return nil
		}
		oob = oob[next:]
	}
	return nil
}

// OOBSpace is the control buffer size, per datagram, that holds every
// message this package enables: IPv6 packet info, IPv4 packet info (for a
// socket with both enabled) and the RXQ_OVFL counter — 96 bytes on 64-bit
// architectures, 72 on 32-bit ones. A smaller buffer makes the kernel
// truncate them (MSG_CTRUNC).
const OOBSpace = pktInfo6Size + pktInfo4Size + rxqOvflSize

// Drops returns the socket's drop counter (the SK_MEMINFO_DROPS field of
// SO_MEMINFO, Linux 4.12+): the same cumulative count ParseRxqOvfl reports,
// but readable when no datagram is being delivered, e.g. on a latched port
// that only foreign sources are hitting. It includes receive-buffer
// overflows and socket-filter rejections alike. Where the option is missing
// or truncated the error wraps unix.ENOPROTOOPT.
func Drops(fd int) (uint32, error) {
	var info [unix.SK_MEMINFO_VARS]uint32
	size := uint32(unsafe.Sizeof(info))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&size)), 0)
	if errno != 0 {
		return 0, fmt.Errorf("get SO_MEMINFO on fd %d: %w", fd, errno)
	}
	if size < (unix.SK_MEMINFO_DROPS+1)*4 {
		// Seen under qemu-user, which answers unknown options with an int.
		return 0, fmt.Errorf("get SO_MEMINFO on fd %d: %d-byte answer has no drop count: %w", fd, size, unix.ENOPROTOOPT)
	}
	return info[unix.SK_MEMINFO_DROPS], nil
}
