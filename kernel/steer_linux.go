package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel/internal/ebpf"
)

// Steering hands UDP datagrams addressed to the held ports of a range of
// local ports to a few sockets, with a BPF sk_lookup program (Linux ≥ 5.9,
// CAP_BPF or CAP_SYS_ADMIN plus CAP_NET_ADMIN) attached to the caller's
// network namespace: held port p goes to socket p mod n of a SOCKMAP. A
// relay can then serve thousands of ports from one socket per worker
// instead of one per port, without binding them, and a receive batch
// holds datagrams of many channels. The receiver learns each datagram's
// port from the IP_ORIGDSTADDR control message (EnableOrigDst,
// ParseOrigDst).
//
// Only held ports are steered (Hold, Release; steershield_linux.go): the
// program runs before the kernel's lookup of unconnected sockets, so a
// port of the range that another program binds — a resolver's random
// query port — keeps its datagrams unless it is held. A held port can
// also be shielded (Shield): datagrams to it from any source but one then
// go to a sink socket whose filter drops them, counted per port, so a
// flood at a latched port costs no wake-up and no receive-buffer space of
// the port's worker.
//
// The program is assembled here by hand (44 instructions), so no eBPF
// library is linked. It matches UDP over IPv4 only, to the given local
// address (any, when it is unspecified); everything else takes the
// kernel's ordinary socket lookup.
type Steering struct {
	sockmap, ports, prog, link int
	n, min, max                int
	sink                       int // the socket shielded ports' foreign datagrams are dropped at
}

// Helper function and context offsets of the sk_lookup program type
// (include/uapi/linux/bpf.h).
const (
	helperSkRelease = 86
	helperSkAssign  = 124

	skLookupProtocol = 12 // struct bpf_sk_lookup: __u32 protocol
	skLookupRemIP4   = 16 // __u32 remote_ip4, network byte order
	skLookupRemPort  = 36 // __be16 remote_port (a 4-byte load is allowed: zero-extended)
	skLookupLocalIP4 = 40 // __u32 local_ip4, network byte order
	skLookupLocalPrt = 60 // __u32 local_port, host byte order
	skPass           = 1
)

// NewSteering loads the program for UDP datagrams to listen (IPv4;
// unspecified = any local address) on ports min..max, spread over n
// sockets, and attaches it to the calling thread's network namespace. It steers
// nothing until SetSocket fills the slots.
func NewSteering(listen netip.Addr, min, max, n int) (*Steering, error) {
	if !listen.Is4() && !listen.Is4In6() {
		return nil, fmt.Errorf("steering: %s is not an IPv4 address", listen)
	}
	if min < 1 || max > 65535 || min > max || n < 1 {
		return nil, fmt.Errorf("steering: invalid ports %d-%d or socket count %d", min, max, n)
	}
	s := &Steering{sockmap: -1, ports: -1, prog: -1, link: -1, sink: -1, n: n, min: min, max: max}
	var err error
	// Slots 0..n-1 are the receivers, slot n the sink.
	if s.sockmap, err = ebpf.MapCreate(unix.BPF_MAP_TYPE_SOCKMAP, 4, 8, n+1, 0); err != nil {
		return nil, fmt.Errorf("steering: create socket map: %w", err)
	}
	// Not preallocated: only the held ports' entries take kernel memory
	// (the program only reads and counts; entries come from Hold).
	if s.ports, err = ebpf.MapCreate(unix.BPF_MAP_TYPE_HASH, 4, shieldValueSize, portMapEntries(min, max), unix.BPF_F_NO_PREALLOC); err != nil {
		s.Close()
		return nil, fmt.Errorf("steering: create port map: %w", err)
	}
	if err := s.openSink(listen.Unmap()); err != nil {
		s.Close()
		return nil, err
	}
	insns := steeringProgram(listen.Unmap(), min, max, n, s.sockmap, s.ports)
	if s.prog, err = ebpf.ProgLoad(unix.BPF_PROG_TYPE_SK_LOOKUP, unix.BPF_SK_LOOKUP, "jnrelay_steer", insns); err != nil {
		s.Close()
		return nil, fmt.Errorf("steering: load sk_lookup program: %w", err)
	}
	// The calling thread's namespace: /proc/self names the process's
	// main thread, which a program that switches namespaces on locked
	// threads (as tests do) may have left in another one.
	netns, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("steering: %w", err)
	}
	defer netns.Close()
	if s.link, err = ebpf.LinkCreate(s.prog, int(netns.Fd()), unix.BPF_SK_LOOKUP, 0); err != nil {
		s.Close()
		return nil, fmt.Errorf("steering: attach to the network namespace: %w", err)
	}
	return s, nil
}

// SteeringUnsupported reports whether err (from NewSteering or
// SteeringAvailable) means this host or process cannot steer at all: no
// bpf(2) or sk_lookup (ENOSYS), or not the privilege (EPERM). Any other
// error is a fault of the caller or of this package.
func SteeringUnsupported(err error) bool {
	return errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM)
}

// SteeringAvailable reports why this process cannot steer ports (nil if
// it can): it attaches a program for one port of 127.0.0.1 and removes it.
func SteeringAvailable() error {
	s, err := NewSteering(netip.MustParseAddr("127.0.0.1"), 1, 1, 1)
	if err != nil {
		return err
	}
	return s.Close()
}

// Covers reports whether port is in the steered range.
func (s *Steering) Covers(port int) bool { return port >= s.min && port <= s.max }

// SetSocket makes fd (an unconnected UDP socket of the same family, bound
// anywhere) receive the ports steered to slot i.
func (s *Steering) SetSocket(i, fd int) error {
	if i < 0 || i >= s.n {
		return fmt.Errorf("steering: slot %d outside 0-%d", i, s.n-1)
	}
	var key [4]byte
	var val [8]byte
	binary.NativeEndian.PutUint32(key[:], uint32(i))
	binary.NativeEndian.PutUint64(val[:], uint64(fd))
	err := ebpf.MapUpdate(s.sockmap, key[:], val[:], unix.BPF_ANY)
	if err != nil {
		return fmt.Errorf("steering: put socket fd %d in slot %d: %w", fd, i, err)
	}
	return nil
}

// Close detaches the program: from then on the ports take the ordinary
// socket lookup again.
func (s *Steering) Close() error {
	var errs []error
	for _, fd := range []*int{&s.link, &s.prog, &s.sockmap, &s.ports, &s.sink} {
		if *fd >= 0 {
			errs = append(errs, unix.Close(*fd))
			*fd = -1
		}
	}
	return errors.Join(errs...)
}

// EnableOrigDst asks the kernel to report each datagram's destination
// address and port (IP_ORIGDSTADDR) on the IPv4 socket fd.
func EnableOrigDst(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_RECVORIGDSTADDR, 1); err != nil {
		return fmt.Errorf("set IP_RECVORIGDSTADDR on fd %d: %w", fd, err)
	}
	return nil
}

// ParseOrigDst finds the IP_ORIGDSTADDR message in a received control
// buffer (as from RecvBatch.Control). It allocates nothing, so a data plane
// can call it for every datagram.
func ParseOrigDst(oob []byte) (netip.AddrPort, bool) {
	// The header is read byte-wise (struct cmsghdr: a size_t length, then
	// level and type), so a buffer of any alignment is safe to parse.
	hdr := unix.CmsgLen(0) // the aligned header size
	lenSize := int(unsafe.Sizeof(unix.Cmsghdr{}.Len))
	for len(oob) >= hdr {
		var l int
		if lenSize == 8 {
			l = int(min(binary.NativeEndian.Uint64(oob), uint64(len(oob)+1)))
		} else {
			l = int(binary.NativeEndian.Uint32(oob))
		}
		level := int32(binary.NativeEndian.Uint32(oob[lenSize:]))
		typ := int32(binary.NativeEndian.Uint32(oob[lenSize+4:]))
		if l < hdr || l > len(oob) {
			return netip.AddrPort{}, false
		}
		if level == unix.SOL_IP && typ == unix.IP_ORIGDSTADDR && l-hdr >= unix.SizeofSockaddrInet4 {
			data := oob[hdr:l] // struct sockaddr_in: family, port, address
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte(data[4:8])), binary.BigEndian.Uint16(data[2:4])), true
		}
		next := unix.CmsgSpace(l - hdr)
		if next >= len(oob) {
			break
		}
		oob = oob[next:]
	}
	return netip.AddrPort{}, false
}

// steeringProgram is, in C:
//
//	if (ctx->protocol != IPPROTO_UDP) return SK_PASS;
//	if (listen && ctx->local_ip4 != listen) return SK_PASS;
//	if (ctx->local_port < min || ctx->local_port > max) return SK_PASS;
//	__u32 port = ctx->local_port, slot = port % n;
//	struct port *p = bpf_map_lookup_elem(&ports, &port);
//	if (!p) return SK_PASS; // not held
//	if (p->ip4 && (ctx->remote_ip4 != p->ip4 || ctx->remote_port != p->port)) {
//		__sync_fetch_and_add(&p->drops, 1);
//		slot = n; // the sink
//	}
//	struct bpf_sock *sk = bpf_map_lookup_elem(&sockmap, &slot);
//	if (sk) { bpf_sk_assign(ctx, sk, 0); bpf_sk_release(sk); }
//	return SK_PASS;
//
// SK_PASS with an assigned socket delivers to it; without one, the
// ordinary lookup goes on. A foreign datagram goes to the sink rather
// than SK_DROP, which would make the kernel answer the flood with ICMP
// port unreachable.
func steeringProgram(listen netip.Addr, min, max, n, sockmap, ports int) []ebpf.Insn {
	a := &ebpf.Asm{}
	const pass, steer, foreign = "pass", "steer", "foreign"
	a.Emit(ebpf.I(ebpf.OpMovReg, 6, 1, 0, 0)) // r6 = ctx
	a.Emit(ebpf.I(ebpf.OpLdxW, 2, 6, skLookupProtocol, 0))
	a.Jump(ebpf.OpJneImm, 2, 0, unix.IPPROTO_UDP, pass)
	if !listen.IsUnspecified() {
		l := listen.As4()
		a.Emit(ebpf.I(ebpf.OpLdxW, 2, 6, skLookupLocalIP4, 0))
		// The field holds the address's bytes in network order; loaded as
		// a host-order word they read as this.
		a.Jump(ebpf.OpJneImm, 2, 0, int32(binary.NativeEndian.Uint32(l[:])), pass)
	}
	a.Emit(ebpf.I(ebpf.OpLdxW, 2, 6, skLookupLocalPrt, 0))
	a.Jump(ebpf.OpJltImm, 2, 0, int32(min), pass)
	a.Jump(ebpf.OpJgtImm, 2, 0, int32(max), pass)
	a.Emit(
		ebpf.I(ebpf.OpStxW, 10, 2, -4, 0), // the port, the shield key
		ebpf.I(ebpf.OpMod32Imm, 2, 0, 0, int32(n)),
		ebpf.I(ebpf.OpStxW, 10, 2, -8, 0), // the slot, the socket key
	)
	a.Lookup(ports, -4)
	a.Jump(ebpf.OpJeqImm, 0, 0, 0, pass) // not held
	a.Emit(ebpf.I(ebpf.OpLdxW, 3, 0, shieldIP4, 0))
	a.Jump(ebpf.OpJeqImm, 3, 0, 0, steer) // held, not shielded
	a.Emit(ebpf.I(ebpf.OpLdxW, 2, 6, skLookupRemIP4, 0))
	a.Jump(ebpf.OpJneReg, 2, 3, 0, foreign)
	a.Emit(ebpf.I(ebpf.OpLdxW, 2, 6, skLookupRemPort, 0), ebpf.I(ebpf.OpLdxW, 3, 0, shieldPort, 0))
	a.Jump(ebpf.OpJneReg, 2, 3, 0, foreign)
	a.Jump(ebpf.OpJa, 0, 0, 0, steer)
	a.Label(foreign)
	a.Emit(
		ebpf.I(ebpf.OpMovImm, 1, 0, 0, 1),
		ebpf.I(ebpf.OpXaddDW, 0, 1, shieldDrops, unix.BPF_ADD),
		ebpf.I(ebpf.OpMovImm, 2, 0, 0, int32(n)),
		ebpf.I(ebpf.OpStxW, 10, 2, -8, 0),
	)
	a.Label(steer)
	a.Lookup(sockmap, -8)
	a.Jump(ebpf.OpJeqImm, 0, 0, 0, pass)
	a.Emit(
		ebpf.I(ebpf.OpMovReg, 7, 0, 0, 0), // r7 = sk
		ebpf.I(ebpf.OpMovReg, 1, 6, 0, 0),
		ebpf.I(ebpf.OpMovReg, 2, 7, 0, 0),
		ebpf.I(ebpf.OpMovImm, 3, 0, 0, 0),
		ebpf.I(ebpf.OpCall, 0, 0, 0, helperSkAssign),
		ebpf.I(ebpf.OpMovReg, 1, 7, 0, 0),
		ebpf.I(ebpf.OpCall, 0, 0, 0, helperSkRelease),
	)
	a.Label(pass)
	a.Emit(ebpf.I(ebpf.OpMovImm, 0, 0, 0, skPass), ebpf.I(ebpf.OpExit, 0, 0, 0, 0))
	return a.Program()
}
