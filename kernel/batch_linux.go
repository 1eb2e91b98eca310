package kernel

import (
	"errors"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RecvBatch receives up to Size datagrams per system call with recvmmsg.
// Its buffers are allocated once; Recv fills them and Packet reads them
// back, so receiving allocates nothing.
type RecvBatch struct {
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []sockaddr
	bufs  [][]byte
	oobs  [][]byte // control buffers; nil unless WithControl
	n     int
}

// NewRecvBatch returns a batch of size buffers of bufSize bytes each.
// Use a bufSize one larger than the largest datagram you accept: a
// datagram that fills the buffer completely may have been truncated.
func NewRecvBatch(size, bufSize int) *RecvBatch {
	b := &RecvBatch{
		msgs:  make([]unix.Mmsghdr, size),
		iovs:  make([]unix.Iovec, size),
		names: make([]sockaddr, size),
		bufs:  make([][]byte, size),
	}
	backing := make([]byte, size*bufSize)
	for i := range size {
		b.bufs[i] = backing[i*bufSize : (i+1)*bufSize : (i+1)*bufSize]
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(bufSize)
		b.msgs[i].Hdr.Iov = &b.iovs[i]
		b.msgs[i].Hdr.SetIovlen(1)
		b.msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
	}
	return b
}

// Size is the number of datagrams one Recv can return.
func (b *RecvBatch) Size() int { return len(b.msgs) }

// WithControl gives every message of the batch a control buffer of size
// bytes, for the ancillary data a socket option asks for (EnableOrigDst,
// IP_PKTINFO); Control reads it back. It returns b.
func (b *RecvBatch) WithControl(size int) *RecvBatch {
	// uint64 backing aligns every buffer as cmsghdrs are laid out, for
	// parsers that cast them (unix.ParseSocketControlMessage);
	// ParseOrigDst itself reads bytes.
	per := (size + 7) / 8
	backing := make([]uint64, len(b.msgs)*per)
	b.oobs = make([][]byte, len(b.msgs))
	for i := range b.msgs {
		b.oobs[i] = unsafe.Slice((*byte)(unsafe.Pointer(&backing[i*per])), per*8)
		b.msgs[i].Hdr.Control = &b.oobs[i][0]
	}
	return b
}

// Control returns the control data of datagram i of the last Recv (valid
// until the next Recv); nil without WithControl.
func (b *RecvBatch) Control(i int) []byte {
	if b.oobs == nil {
		return nil
	}
	return b.oobs[i][:b.msgs[i].Hdr.Controllen]
}

// Recv reads up to Size datagrams from the non-blocking socket fd. It
// returns 0 and nil when nothing is waiting.
func (b *RecvBatch) Recv(fd int) (int, error) {
	for i := range b.msgs {
		b.msgs[i].Hdr.Namelen = uint32(unsafe.Sizeof(sockaddr{}))
		b.msgs[i].Hdr.Flags = 0
		b.msgs[i].Len = 0
		if b.oobs != nil {
			b.msgs[i].Hdr.SetControllen(len(b.oobs[i]))
		}
	}
	for {
		// RawSyscall: the socket is non-blocking, so the call never
		// parks the thread and the scheduler need not know about it.
		n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd),
			uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(len(b.msgs)), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			b.n = int(n)
			return b.n, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			b.n = 0
			return 0, nil
		}
		b.n = 0
		return 0, errno
	}
}

// Packet returns datagram i of the last Recv: its bytes (valid until the
// next Recv), its source, and whether it was truncated (larger than the
// buffer, or exactly filling it).
func (b *RecvBatch) Packet(i int) (data []byte, from netip.AddrPort, truncated bool) {
	m := &b.msgs[i]
	n := int(m.Len)
	from, _ = b.names[i].addrPort()
	truncated = m.Hdr.Flags&unix.MSG_TRUNC != 0 || n >= len(b.bufs[i])
	return b.bufs[i][:n], from, truncated
}

// SendBatch sends datagrams to one destination with sendmmsg.
type SendBatch struct {
	msgs []unix.Mmsghdr
	iovs []unix.Iovec
	dst  sockaddr
	n    int
	// SendSegmented's messages: one per run of datagrams, each with its
	// UDP_SEGMENT control message and the number of datagrams it carries.
	segMsgs []unix.Mmsghdr
	segCtl  [][32]byte // a cmsghdr and a uint16, aligned: 24 bytes on 64-bit hosts, 16 on 32-bit
	segN    []int
}

// NewSendBatch returns a batch of up to size datagrams.
func NewSendBatch(size int) *SendBatch {
	b := &SendBatch{msgs: make([]unix.Mmsghdr, size), iovs: make([]unix.Iovec, size),
		segMsgs: make([]unix.Mmsghdr, size), segCtl: make([][32]byte, size), segN: make([]int, size)}
	for i := range b.msgs {
		b.msgs[i].Hdr.Iov = &b.iovs[i]
		b.msgs[i].Hdr.SetIovlen(1)
		b.msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.dst))
		b.segMsgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.dst))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b.segCtl[i][0]))
		h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
	}
	return b
}

// Reset empties the batch and sets the destination of its datagrams.
func (b *SendBatch) Reset(dst netip.AddrPort) {
	n := b.dst.set(dst)
	for i := range b.msgs {
		b.msgs[i].Hdr.Namelen = n
		b.segMsgs[i].Hdr.Namelen = n
	}
	b.n = 0
}

// Add queues p (not copied: it must stay valid until Send). It reports
// false when the batch is full.
func (b *SendBatch) Add(p []byte) bool {
	if b.n == len(b.msgs) {
		return false
	}
	b.iovs[b.n].Base = nil // a zero-length datagram is legal UDP
	if len(p) > 0 {
		b.iovs[b.n].Base = &p[0]
	}
	b.iovs[b.n].SetLen(len(p))
	b.n++
	return true
}

// Len is the number of queued datagrams.
func (b *SendBatch) Len() int { return b.n }

// ErrShortSend reports that the kernel took only some datagrams of a
// batch (its send buffer is full); the rest are lost.
var ErrShortSend = errors.New("sendmmsg sent part of the batch")

// Send sends the queued datagrams from the non-blocking socket fd and
// empties the batch. It returns how many the kernel accepted.
func (b *SendBatch) Send(fd int) (int, error) {
	queued := b.n
	b.n = 0
	return sendmmsg(fd, b.msgs[:queued])
}

// ErrNoSegmentation reports that the kernel refused a UDP GSO send to the
// batch's destination: a datagram with its headers exceeds the path MTU
// (EMSGSIZE; EINVAL on older kernels), or, before Linux 6.11, the route's
// device has no transmit checksum offload (EIO). The datagrams were sent
// one by one instead.
var ErrNoSegmentation = errors.New("UDP segmentation offload refused for this destination")

// Limits of one UDP GSO send (include/linux/udp.h, and the 16-bit length
// of one IPv4 datagram less its headers).
const (
	maxSegments     = 64
	maxSegmentBytes = 65507
)

// SendSegmented sends the queued datagrams like Send, but each run of
// equal-size ones (the run's last may be shorter) as one message that the
// kernel segments (UDP_SEGMENT, Linux 4.18): a hot flow's batch crosses
// the UDP and IP layers once instead of once per datagram. It returns
// how many datagrams the kernel accepted and in how many messages. When
// the kernel refuses segmentation toward this destination it sends the
// rest as Send would and returns ErrNoSegmentation with the total.
func (b *SendBatch) SendSegmented(fd int) (sent, messages int, err error) {
	queued := b.n
	b.n = 0
	g := 0
	for i := 0; i < queued; g++ {
		size := b.iovs[i].Len
		j := i + 1
		if size > 0 {
			for j < queued && j-i < maxSegments && uint64(j-i+1)*uint64(size) <= maxSegmentBytes && b.iovs[j].Len <= size && b.iovs[j].Len > 0 {
				j++
				if b.iovs[j-1].Len < size {
					break // a shorter datagram ends the run
				}
			}
		}
		m := &b.segMsgs[g].Hdr
		m.Iov = &b.iovs[i]
		m.SetIovlen(j - i)
		m.Control, m.Controllen = nil, 0
		if j-i > 1 {
			*(*uint16)(unsafe.Pointer(&b.segCtl[g][unix.CmsgLen(0)])) = uint16(size)
			m.Control = &b.segCtl[g][0]
			m.SetControllen(unix.CmsgSpace(2))
		}
		b.segN[g] = j - i
		i = j
	}
	msgs, err := sendmmsg(fd, b.segMsgs[:g])
	for _, n := range b.segN[:msgs] {
		sent += n
	}
	if (errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EMSGSIZE)) && b.segN[msgs] > 1 {
		rest, err := sendmmsg(fd, b.msgs[sent:queued])
		return sent + rest, msgs + rest, errors.Join(ErrNoSegmentation, err)
	}
	return sent, msgs, err
}

// sendmmsg sends msgs from the non-blocking socket fd, retrying after a
// partial send, and returns how many the kernel took; ErrShortSend when
// its send buffer filled up first.
func sendmmsg(fd int, msgs []unix.Mmsghdr) (int, error) {
	sent := 0
	for sent < len(msgs) {
		n, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd),
			uintptr(unsafe.Pointer(&msgs[sent])), uintptr(len(msgs)-sent), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			if n == 0 {
				return sent, ErrShortSend
			}
			sent += int(n)
			continue
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return sent, ErrShortSend
		}
		return sent, errno
	}
	return sent, nil
}
