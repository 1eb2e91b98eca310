package kernel

import (
	"errors"
	"log/slog"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Features says which optional kernel facilities work on this host. The
// daemon detects them once at start, logs them, and takes the fallback for
// each one that is false.
type Features struct {
	GSO          bool   // UDP_SEGMENT (Linux 4.18): one sendmsg sends many datagrams
	GRO          bool   // UDP_GRO (Linux 5.0): one recvmsg returns many datagrams
	RxqOvfl      bool   // SO_RXQ_OVFL (2.6.33): per-datagram drop counter
	PktInfo      bool   // IP_PKTINFO: destination address of each datagram
	BufForce     bool   // SO_RCVBUFFORCE (CAP_NET_ADMIN): buffers above rmem_max
	SourceFilter bool   // AttachSourceFilter drops foreign sources in the kernel
	Kernel       string // kernel release, uname -r
}

// probeTimeoutMillis bounds how long Detect waits for its own loopback
// datagram, which normally is queued before sendto returns.
const probeTimeoutMillis = 1000

// Detect probes each facility once on throwaway sockets bound to
// 127.0.0.1:0. Setting an option is taken as support, except for the
// source filter, which is exercised end to end (a foreign datagram must be
// dropped and the latched one delivered), because the kernel accepts any
// load offset when a filter is attached and only fails when it runs.
// Detect never fails: a facility it cannot probe is reported as absent.
func Detect() Features {
	var f Features
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		f.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	fd, _, err := probeSocket()
	if err != nil {
		return f
	}
	defer unix.Close(fd)
	f.GSO = unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT, 0) == nil
	f.GRO = unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	f.RxqOvfl = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1) == nil
	f.PktInfo = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1) == nil
	f.BufForce = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, minSocketBuffer) == nil
	f.SourceFilter = probeSourceFilter()
	return f
}

// LogAttrs returns the features as attributes for one structured log line,
// e.g. logger.LogAttrs(ctx, slog.LevelInfo, "kernel features", f.LogAttrs()...).
func (f Features) LogAttrs() []slog.Attr {
	return []slog.Attr{
		slog.String("kernel", f.Kernel),
		slog.Bool("gso", f.GSO),
		slog.Bool("gro", f.GRO),
		slog.Bool("rxq_ovfl", f.RxqOvfl),
		slog.Bool("pktinfo", f.PktInfo),
		slog.Bool("buf_force", f.BufForce),
		slog.Bool("source_filter", f.SourceFilter),
	}
}

// LogValue makes Features log as a group: logger.Info("start", "features", f).
func (f Features) LogValue() slog.Value {
	return slog.GroupValue(f.LogAttrs()...)
}

// probeSourceFilter latches a socket to one loopback sender, sends a
// datagram from another sender and then one from the latched one, and
// reports whether the latched one is the first to arrive.
func probeSourceFilter() bool {
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	var addrs []netip.AddrPort
	for range 3 {
		fd, addr, err := probeSocket()
		if err != nil {
			return false
		}
		fds = append(fds, fd)
		addrs = append(addrs, addr)
	}
	recv, latched, foreign := fds[0], fds[1], fds[2]
	if AttachSourceFilter(recv, addrs[1]) != nil {
		return false
	}
	to := &unix.SockaddrInet4{Addr: addrs[0].Addr().As4(), Port: int(addrs[0].Port())}
	if unix.Sendto(foreign, []byte{'f'}, 0, to) != nil || unix.Sendto(latched, []byte{'l'}, 0, to) != nil {
		return false
	}
	pfd := []unix.PollFd{{Fd: int32(recv), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, probeTimeoutMillis)
	for errors.Is(err, unix.EINTR) {
		n, err = unix.Poll(pfd, probeTimeoutMillis)
	}
	if err != nil || n != 1 {
		return false
	}
	var buf [2]byte
	n, _, err = unix.Recvfrom(recv, buf[:], unix.MSG_DONTWAIT)
	return err == nil && n == 1 && buf[0] == 'l'
}

// probeSocket returns a UDP socket bound to 127.0.0.1 on a free port.
func probeSocket() (int, netip.AddrPort, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, netip.AddrPort{}, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		return -1, netip.AddrPort{}, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, netip.AddrPort{}, err
	}
	in4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		unix.Close(fd)
		return -1, netip.AddrPort{}, unix.EAFNOSUPPORT
	}
	return fd, netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port)), nil
}
