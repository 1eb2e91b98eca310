package kernel

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Socket is a descriptor this package opened for relayd's data plane: a
// relay port (OpenUDP) or a raw sender (OpenRawSender). Its owner uses it
// through these methods and gives it back with Close, so no caller makes a
// system call on the descriptor itself. The batch I/O (RecvBatch,
// SendBatch, RawSendBatch), Poller and Steering take the number FD
// returns: they are this package's own.
//
// A Socket is closed by one goroutine, after every other user of it has
// finished (relayd/channel holds the channel's lock for writing).
type Socket struct{ fd int }

// OpenUDP returns a non-blocking, close-on-exec UDP socket bound to addr
// (IPv4 or IPv6 by the address's family; an IPv6 socket is v6-only so it
// never shadows a separate IPv4 bind of the same port).
func OpenUDP(addr netip.AddrPort) (*Socket, error) {
	fd, err := openUDP(addr)
	if err != nil {
		return nil, err
	}
	return &Socket{fd: fd}, nil
}

// OpenRawSender returns a non-blocking send-only IPPROTO_RAW socket for a
// RawSendBatch.
func OpenRawSender() (*Socket, error) {
	fd, err := openRawSender()
	if err != nil {
		return nil, err
	}
	return &Socket{fd: fd}, nil
}

// FD is the descriptor, for this package's batch I/O, Poller and
// Steering; -1 once closed.
func (s *Socket) FD() int { return s.fd }

// Close releases the descriptor. It is idempotent.
func (s *Socket) Close() error {
	if s.fd < 0 {
		return nil
	}
	fd := s.fd
	s.fd = -1
	if err := unix.Close(fd); err != nil {
		return fmt.Errorf("close fd %d: %w", fd, err)
	}
	return nil
}

// Drops is the socket's drop counter (see Drops).
func (s *Socket) Drops() (uint32, error) { return Drops(s.fd) }

// SetBuffers sizes the socket's buffers and reports what the kernel
// applied (see SetBuffers).
func (s *Socket) SetBuffers(rcv, snd int) (gotRcv, gotSnd int, err error) {
	return SetBuffers(s.fd, rcv, snd)
}

// SetDSCP marks what the socket sends with dscp (see SetDSCP).
func (s *Socket) SetDSCP(ipv6 bool, dscp int) error { return SetDSCP(s.fd, ipv6, dscp) }

// AttachSourceFilter makes the kernel drop every datagram not from src
// (see AttachSourceFilter).
func (s *Socket) AttachSourceFilter(src netip.AddrPort) error { return AttachSourceFilter(s.fd, src) }

// DetachFilter removes the socket's filter (see DetachFilter).
func (s *Socket) DetachFilter() error { return DetachFilter(s.fd) }

// EnableOrigDst asks for every datagram's original destination (see
// EnableOrigDst).
func (s *Socket) EnableOrigDst() error { return EnableOrigDst(s.fd) }

// OpenFileLimit is how many descriptors the process may hold open
// (RLIMIT_NOFILE, the soft limit: Go raises it to the hard one at start).
func OpenFileLimit() (uint64, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit RLIMIT_NOFILE: %w", err)
	}
	return lim.Cur, nil
}
