package kernel

import (
	"errors"
	"fmt"
	"math"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Poller waits for many sockets at once with epoll (level-triggered), so a
// data plane can serve thousands of ports from a few threads instead of a
// goroutine per socket.
type Poller struct {
	epfd int
	// file wraps epfd for the Go runtime's own poller: Wait parks the
	// goroutine until the epoll instance is readable instead of blocking
	// a thread in epoll_wait, so waking a worker costs a goroutine switch,
	// not a thread hand-off.
	file *os.File
	conn syscall.RawConn
	wake int // eventfd that interrupts Wait
	raw  []unix.EpollEvent

	// poll is the callback given to conn.Read, made once so waiting does
	// not allocate; it leaves its results in polled and pollErr.
	poll    func(uintptr) bool
	polled  int
	pollErr error
}

// Event is a ready socket: the token it was added with.
type Event struct {
	Token uint64
	Flags uint32 // EPOLLIN, EPOLLERR, ...
}

// WakeToken is the token of events caused by Wake.
const WakeToken = math.MaxUint64

// NewPoller returns a Poller.
func NewPoller() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("epoll fd non-blocking: %w", err)
	}
	file := os.NewFile(uintptr(epfd), "epoll")
	conn, err := file.SyscallConn()
	if err != nil {
		file.Close()
		unix.Close(wake)
		return nil, fmt.Errorf("epoll fd raw conn: %w", err)
	}
	p := &Poller{epfd: epfd, file: file, conn: conn, wake: wake}
	p.poll = func(uintptr) bool {
		p.polled, p.pollErr = epollWait(p.epfd, p.raw)
		return p.polled > 0 || p.pollErr != nil
	}
	if err := p.Add(wake, WakeToken); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Add watches fd for readability; Wait reports it with token.
func (p *Poller) Add(fd int, token uint64) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	*(*uint64)(unsafe.Pointer(&ev.Fd)) = token
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll add fd %d: %w", fd, err)
	}
	return nil
}

// Remove stops watching fd. Closing fd does the same.
func (p *Poller) Remove(fd int) error {
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
		return fmt.Errorf("epoll del fd %d: %w", fd, err)
	}
	return nil
}

// Wait fills events with ready sockets: with timeoutMs 0 it only looks,
// with any other value it waits until at least one is ready. It returns the number of
// events. Only one goroutine may call Wait; Add, Remove and Wake are safe
// from any goroutine.
func (p *Poller) Wait(events []Event, timeoutMs int) (int, error) {
	if len(p.raw) != len(events) {
		p.raw = make([]unix.EpollEvent, len(events))
	}
	raw := p.raw
	var n int
	var err error
	if timeoutMs == 0 {
		n, err = epollWait(p.epfd, raw)
	} else {
		// Park in the runtime until epfd is readable.
		rerr := p.conn.Read(p.poll)
		n, err = p.polled, p.pollErr
		if err == nil && rerr != nil {
			err = rerr
		}
	}
	if err != nil {
		return 0, fmt.Errorf("epoll_wait: %w", err)
	}
	for i := range n {
		events[i] = Event{Token: *(*uint64)(unsafe.Pointer(&raw[i].Fd)), Flags: raw[i].Events}
		if events[i].Token == WakeToken {
			var buf [8]byte
			unix.Read(p.wake, buf[:]) // reset the counter; EAGAIN is fine
		}
	}
	return n, nil
}

// epollWait polls without blocking, retrying on EINTR.
//
// It is a raw system call, like the datagram batches: a call that cannot
// block needs no scheduler bookkeeping, and the bookkeeping is not free.
// Through the syscall package's entry, every poll after an idle spell
// would wake the runtime's sysmon thread from its deep sleep (a futex
// wake) and reset it to polling every 20 µs for the next millisecond:
// at VoIP rates, where each datagram finds the relay idle, that cost more
// CPU than relaying the datagram.
func epollWait(epfd int, raw []unix.EpollEvent) (int, error) {
	for {
		// epoll_pwait with no signal mask is epoll_wait, and exists on
		// every architecture (arm64 has no epoll_wait).
		n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd),
			uintptr(unsafe.Pointer(&raw[0])), uintptr(len(raw)), 0, 0, 0)
		switch errno {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, errno
	}
}

// Wake makes a blocked Wait return a WakeToken event.
func (p *Poller) Wake() error {
	one := [8]byte{1}
	if *(*uint64)(unsafe.Pointer(&one)) != 1 {
		one = [8]byte{7: 1} // big-endian host
	}
	_, err := unix.Write(p.wake, one[:])
	if errors.Is(err, unix.EAGAIN) {
		return nil // counter saturated: a wake-up is pending anyway
	}
	return err
}

// Close releases the poller.
func (p *Poller) Close() error {
	return errors.Join(unix.Close(p.wake), p.file.Close())
}
