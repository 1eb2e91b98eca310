package offload

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
)

// sockDiag asks the kernel which UDP socket would receive a datagram:
// NETLINK_SOCK_DIAG's exact lookup (inet_diag_req_v2 without NLM_F_DUMP),
// which runs the same lookup as an arriving datagram — connected sockets
// before bound ones, a specific address before the wildcard, the
// sk_lookup program of steered ports — so it names the socket whose
// datagrams a flow on that port would take.
type sockDiag struct {
	mu  sync.Mutex
	fd  int
	seq uint32
	buf []byte
}

func openSockDiag() (*sockDiag, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("open NETLINK_SOCK_DIAG: %w", err)
	}
	tv := unix.Timeval{Sec: 5}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("NETLINK_SOCK_DIAG receive timeout: %w", err)
	}
	return &sockDiag{fd: fd, buf: make([]byte, 8192)}, nil
}

func (d *sockDiag) close() error { return unix.Close(d.fd) }

// Sizes of struct nlmsghdr, inet_diag_req_v2 and the part of
// inet_diag_msg up to its uid.
const (
	nlmsgHdrLen    = 16
	diagReqLen     = 56
	diagMsgUIDOff  = 4 + 48 + 12
	diagMsgMinSize = diagMsgUIDOff + 8
)

// receiver returns the uid owning the UDP socket that would receive a
// datagram from peer to local, or found false when none would.
func (d *sockDiag) receiver(peer, local netip.AddrPort) (uid uint32, found bool, err error) {
	p, l := peer.Addr().Unmap(), local.Addr().Unmap()
	if !p.Is4() || !l.Is4() {
		return 0, false, fmt.Errorf("socket lookup %s -> %s: IPv4 only", peer, local)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	msg := make([]byte, nlmsgHdrLen+diagReqLen)
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(msg[8:], d.seq)
	req := msg[nlmsgHdrLen:]
	req[0] = unix.AF_INET
	req[1] = unix.IPPROTO_UDP
	ne.PutUint32(req[4:], 0xffffffff) // every state
	id := req[8:]
	// The kernel's UDP lookup takes the id's source as the datagram's
	// source ("swapped for historical reasons" in udp_diag.c): the peer.
	binary.BigEndian.PutUint16(id[0:], peer.Port())
	binary.BigEndian.PutUint16(id[2:], local.Port())
	a4, b4 := p.As4(), l.As4()
	copy(id[4:], a4[:])
	copy(id[20:], b4[:])
	ne.PutUint32(id[40:], 0xffffffff) // INET_DIAG_NOCOOKIE
	ne.PutUint32(id[44:], 0xffffffff)
	if err := unix.Sendto(d.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, false, fmt.Errorf("socket lookup %s -> %s: send: %w", peer, local, err)
	}
	for {
		n, _, err := unix.Recvfrom(d.fd, d.buf, 0)
		if err != nil {
			return 0, false, fmt.Errorf("socket lookup %s -> %s: receive: %w", peer, local, err)
		}
		uid, found, done, err := d.parse(d.buf[:n])
		if done || err != nil {
			if err != nil {
				err = fmt.Errorf("socket lookup %s -> %s: %w", peer, local, err)
			}
			return uid, found, err
		}
	}
}

// parse reads the answer to the current request from one datagram;
// done false means it held only stale messages.
func (d *sockDiag) parse(b []byte) (uid uint32, found, done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b[0:]))
		if l < nlmsgHdrLen || l > len(b) {
			return 0, false, true, errors.New("truncated netlink message")
		}
		typ, seq, body := ne.Uint16(b[4:]), ne.Uint32(b[8:]), b[nlmsgHdrLen:l]
		b = b[min(len(b), (l+3)&^3):]
		if seq != d.seq {
			continue // an answer to a request that timed out
		}
		switch typ {
		case unix.NLMSG_ERROR:
			if len(body) < 4 {
				return 0, false, true, errors.New("truncated netlink error")
			}
			errno := -int32(ne.Uint32(body))
			if errno == 0 || unix.Errno(errno) == unix.ENOENT {
				return 0, false, true, nil
			}
			return 0, false, true, unix.Errno(errno)
		case unix.SOCK_DIAG_BY_FAMILY:
			if len(body) < diagMsgMinSize {
				return 0, false, true, errors.New("truncated inet_diag_msg")
			}
			return ne.Uint32(body[diagMsgUIDOff:]), true, true, nil
		}
	}
	return 0, false, false, nil
}
