package kernel

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A raw sender sends UDP/IPv4 datagrams with any source port from one
// send-only IPPROTO_RAW socket (CAP_NET_RAW): the send half of a data plane
// whose ports are steered to a few sockets (Steering), where no socket is
// bound to the relay port a datagram must come from. Such a socket never
// receives anything. The kernel fills in the IP header's checksum and ID
// and routes the datagram as usual; the UDP header and checksum are
// written here.

// udpIPv4Header is the size of the IPv4 and UDP headers a raw datagram
// carries.
const udpIPv4Header = 20 + 8

// openRawSender returns a non-blocking send-only IPPROTO_RAW socket.
func openRawSender() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return -1, fmt.Errorf("raw IPv4 socket (needs CAP_NET_RAW): %w", err)
	}
	return fd, nil
}

// RawSendBatch queues datagrams, each with its own source and destination,
// for one sendmmsg on a raw sender. Its buffers are allocated once: adding
// and sending allocate nothing.
type RawSendBatch struct {
	msgs  []unix.Mmsghdr
	iovs  [][2]unix.Iovec // headers, payload
	hdrs  [][udpIPv4Header]byte
	names []unix.RawSockaddrInet4
	n     int
}

// NewRawSendBatch returns a batch of up to size datagrams.
func NewRawSendBatch(size int) *RawSendBatch {
	b := &RawSendBatch{
		msgs: make([]unix.Mmsghdr, size), iovs: make([][2]unix.Iovec, size),
		hdrs: make([][udpIPv4Header]byte, size), names: make([]unix.RawSockaddrInet4, size),
	}
	for i := range b.msgs {
		b.iovs[i][0].Base = &b.hdrs[i][0]
		b.iovs[i][0].SetLen(udpIPv4Header)
		b.msgs[i].Hdr.Iov = &b.iovs[i][0]
		b.msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		b.msgs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		b.names[i].Family = unix.AF_INET
	}
	return b
}

// Len is the number of queued datagrams.
func (b *RawSendBatch) Len() int { return b.n }

// Add queues payload (not copied: it must stay valid until Send) from src
// to dst, both IPv4, with the given TOS byte (DSCPExpeditedForwarding<<2
// for media). It reports false when the batch is full or an address is not
// IPv4 (or the payload is too large for one IPv4 datagram).
func (b *RawSendBatch) Add(src, dst netip.AddrPort, tos uint8, payload []byte) bool {
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	if b.n == len(b.msgs) || !sa.Is4() || !da.Is4() || len(payload) > 65535-udpIPv4Header {
		return false
	}
	s4, d4 := sa.As4(), da.As4()
	h := &b.hdrs[b.n]
	total := udpIPv4Header + len(payload)
	h[0], h[1] = 0x45, tos // IPv4, 20-byte header
	binary.BigEndian.PutUint16(h[2:], uint16(total))
	binary.BigEndian.PutUint32(h[4:], 0x00004000) // ID 0 (the kernel picks one), don't fragment
	h[8], h[9] = 64, unix.IPPROTO_UDP
	h[10], h[11] = 0, 0 // the kernel fills in the header checksum
	copy(h[12:16], s4[:])
	copy(h[16:20], d4[:])
	binary.BigEndian.PutUint16(h[20:], src.Port())
	binary.BigEndian.PutUint16(h[22:], dst.Port())
	binary.BigEndian.PutUint16(h[24:], uint16(8+len(payload)))
	h[26], h[27] = 0, 0
	binary.BigEndian.PutUint16(h[26:], udpChecksum(s4, d4, h[20:28], payload))

	iov := &b.iovs[b.n]
	iov[1].Base = nil
	if len(payload) > 0 {
		iov[1].Base = &payload[0]
	}
	iov[1].SetLen(len(payload))
	b.msgs[b.n].Hdr.SetIovlen(2)
	b.names[b.n].Addr = d4
	b.n++
	return true
}

// Send sends the queued datagrams from the raw socket fd and empties the
// batch; it returns how many the kernel took (see SendBatch.Send).
func (b *RawSendBatch) Send(fd int) (int, error) {
	queued := b.n
	b.n = 0
	return sendmmsg(fd, b.msgs[:queued])
}

// udpChecksum is the UDP checksum (RFC 768) of a datagram with header hdr
// (its checksum field zero) and payload between src and dst. A result of
// zero is sent as 0xffff: zero means "no checksum".
func udpChecksum(src, dst [4]byte, hdr, payload []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(b[0])<<8 | uint32(b[1])
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	sum += unix.IPPROTO_UDP + uint32(len(hdr)+len(payload))
	add(hdr)
	add(payload)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	c := ^uint16(sum)
	if c == 0 {
		c = 0xffff
	}
	return c
}
