package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Steering hands every UDP datagram addressed to a range of local ports to
// a few sockets, with a BPF sk_lookup program (Linux ≥ 5.9, CAP_BPF or
// CAP_SYS_ADMIN plus CAP_NET_ADMIN) attached to the caller's network
// namespace: port p goes to socket p mod n of a SOCKMAP. A relay can then
// serve thousands of ports from one socket per worker instead of one per
// port, without binding them, and a receive batch holds datagrams of many
// channels. The receiver learns each datagram's port from the
// IP_ORIGDSTADDR control message (EnableOrigDst, ParseOrigDst).
//
// The program is assembled here by hand (23 instructions), so no eBPF
// library is linked. It matches UDP over IPv4 only, to the given local
// address (any, when it is unspecified); everything else takes the
// kernel's ordinary socket lookup.
type Steering struct {
	sockmap, prog, link int
	n                   int
}

// Helper function and context offsets of the sk_lookup program type
// (include/uapi/linux/bpf.h).
const (
	helperMapLookupElem = 1
	helperSkRelease     = 86
	helperSkAssign      = 124

	skLookupProtocol = 12 // struct bpf_sk_lookup: __u32 protocol
	skLookupLocalIP4 = 40 // __u32 local_ip4, network byte order
	skLookupLocalPrt = 60 // __u32 local_port, host byte order
	skPass           = 1
)

// NewSteering loads the program for UDP datagrams to listen (IPv4;
// unspecified = any local address) on ports min..max, spread over n
// sockets, and attaches it to the current network namespace. It steers
// nothing until SetSocket fills the slots.
func NewSteering(listen netip.Addr, min, max, n int) (*Steering, error) {
	if !listen.Is4() && !listen.Is4In6() {
		return nil, fmt.Errorf("steering: %s is not an IPv4 address", listen)
	}
	if min < 1 || max > 65535 || min > max || n < 1 {
		return nil, fmt.Errorf("steering: invalid ports %d-%d or socket count %d", min, max, n)
	}
	s := &Steering{sockmap: -1, prog: -1, link: -1, n: n}
	var err error
	if s.sockmap, err = bpfMapCreate(unix.BPF_MAP_TYPE_SOCKMAP, 4, 8, n); err != nil {
		return nil, fmt.Errorf("steering: create socket map: %w", err)
	}
	insns := steeringProgram(listen.Unmap(), min, max, n, s.sockmap)
	if s.prog, err = bpfProgLoad(unix.BPF_PROG_TYPE_SK_LOOKUP, unix.BPF_SK_LOOKUP, insns); err != nil {
		s.Close()
		return nil, fmt.Errorf("steering: load sk_lookup program: %w", err)
	}
	netns, err := os.Open("/proc/self/ns/net")
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("steering: %w", err)
	}
	defer netns.Close()
	if s.link, err = bpfLinkCreate(s.prog, int(netns.Fd()), unix.BPF_SK_LOOKUP); err != nil {
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

// SetSocket makes fd (an unconnected UDP socket of the same family, bound
// anywhere) receive the ports steered to slot i.
func (s *Steering) SetSocket(i, fd int) error {
	if i < 0 || i >= s.n {
		return fmt.Errorf("steering: slot %d outside 0-%d", i, s.n-1)
	}
	key, val := uint32(i), uint64(fd)
	attr := struct {
		fd         uint32
		_          uint32
		key, value uint64
		flags      uint64
	}{fd: uint32(s.sockmap), key: uint64(uintptr(unsafe.Pointer(&key))), value: uint64(uintptr(unsafe.Pointer(&val)))}
	_, err := bpfCall(unix.BPF_MAP_UPDATE_ELEM, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	runtime.KeepAlive(&key) // referenced only through attr's integers
	runtime.KeepAlive(&val)
	if err != nil {
		return fmt.Errorf("steering: put socket fd %d in slot %d: %w", fd, i, err)
	}
	return nil
}

// Close detaches the program: from then on the ports take the ordinary
// socket lookup again.
func (s *Steering) Close() error {
	var errs []error
	for _, fd := range []*int{&s.link, &s.prog, &s.sockmap} {
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

// bpfInsn is struct bpf_insn.
type bpfInsn struct {
	code uint8
	regs uint8 // dst_reg and src_reg, 4 bits each, in the host's bit-field order
	off  int16
	imm  int32
}

func insn(code uint8, dst, src uint8, off int16, imm int32) bpfInsn {
	regs := dst | src<<4
	if bigEndian {
		regs = dst<<4 | src
	}
	return bpfInsn{code: code, regs: regs, off: off, imm: imm}
}

var bigEndian = func() bool {
	x := uint16(1)
	return (*[2]byte)(unsafe.Pointer(&x))[0] == 0
}()

// eBPF opcodes used by the program.
const (
	opMovReg   = 0xbf // BPF_ALU64 | BPF_MOV | BPF_X
	opMovImm   = 0xb7 // BPF_ALU64 | BPF_MOV | BPF_K
	opAddImm   = 0x07 // BPF_ALU64 | BPF_ADD | BPF_K
	opMod32Imm = 0x94 // BPF_ALU | BPF_MOD | BPF_K
	opLdxW     = 0x61 // BPF_LDX | BPF_MEM | BPF_W
	opStxW     = 0x63 // BPF_STX | BPF_MEM | BPF_W
	opLdImm64  = 0x18 // BPF_LD | BPF_DW | BPF_IMM (two instructions)
	opJeqImm   = 0x15 // BPF_JMP | BPF_JEQ | BPF_K
	opJneImm   = 0x55 // BPF_JMP | BPF_JNE | BPF_K
	opJgtImm   = 0x25 // BPF_JMP | BPF_JGT | BPF_K
	opJltImm   = 0xa5 // BPF_JMP | BPF_JLT | BPF_K
	opCall     = 0x85 // BPF_JMP | BPF_CALL
	opExit     = 0x95 // BPF_JMP | BPF_EXIT
)

// steeringProgram is, in C:
//
//	if (ctx->protocol != IPPROTO_UDP) return SK_PASS;
//	if (listen && ctx->local_ip4 != listen) return SK_PASS;
//	if (ctx->local_port < min || ctx->local_port > max) return SK_PASS;
//	__u32 key = ctx->local_port % n;
//	struct bpf_sock *sk = bpf_map_lookup_elem(&sockmap, &key);
//	if (sk) { bpf_sk_assign(ctx, sk, 0); bpf_sk_release(sk); }
//	return SK_PASS;
//
// SK_PASS with an assigned socket delivers to it; without one, the
// ordinary lookup goes on.
func steeringProgram(listen netip.Addr, min, max, n, sockmap int) []bpfInsn {
	var p []bpfInsn
	var toPass []int // jumps to patch to the final "return SK_PASS"
	jump := func(op uint8, dst uint8, imm int32) {
		toPass = append(toPass, len(p))
		p = append(p, insn(op, dst, 0, 0, imm))
	}
	p = append(p, insn(opMovReg, 6, 1, 0, 0)) // r6 = ctx
	p = append(p, insn(opLdxW, 2, 6, skLookupProtocol, 0))
	jump(opJneImm, 2, unix.IPPROTO_UDP)
	if !listen.IsUnspecified() {
		a := listen.As4()
		p = append(p, insn(opLdxW, 2, 6, skLookupLocalIP4, 0))
		// The field holds the address's bytes in network order; loaded as
		// a host-order word they read as this.
		jump(opJneImm, 2, int32(binary.NativeEndian.Uint32(a[:])))
	}
	p = append(p, insn(opLdxW, 2, 6, skLookupLocalPrt, 0))
	jump(opJltImm, 2, int32(min))
	jump(opJgtImm, 2, int32(max))
	p = append(p,
		insn(opMod32Imm, 2, 0, 0, int32(n)),
		insn(opStxW, 10, 2, -4, 0), // key on the stack
		insn(opLdImm64, 1, unix.BPF_PSEUDO_MAP_FD, 0, int32(sockmap)),
		insn(0, 0, 0, 0, 0),
		insn(opMovReg, 2, 10, 0, 0),
		insn(opAddImm, 2, 0, 0, -4),
		insn(opCall, 0, 0, 0, helperMapLookupElem),
	)
	jump(opJeqImm, 0, 0)
	p = append(p,
		insn(opMovReg, 7, 0, 0, 0), // r7 = sk
		insn(opMovReg, 1, 6, 0, 0),
		insn(opMovReg, 2, 7, 0, 0),
		insn(opMovImm, 3, 0, 0, 0),
		insn(opCall, 0, 0, 0, helperSkAssign),
		insn(opMovReg, 1, 7, 0, 0),
		insn(opCall, 0, 0, 0, helperSkRelease),
	)
	pass := len(p)
	p = append(p, insn(opMovImm, 0, 0, 0, skPass), insn(opExit, 0, 0, 0, 0))
	for _, j := range toPass {
		p[j].off = int16(pass - j - 1)
	}
	return p
}

// bpfCall is the bpf(2) system call.
func bpfCall(cmd int, attr unsafe.Pointer, size uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

func bpfMapCreate(typ, keySize, valueSize, entries int) (int, error) {
	attr := struct {
		mapType, keySize, valueSize, maxEntries, mapFlags uint32
		_                                                 [108]byte
	}{mapType: uint32(typ), keySize: uint32(keySize), valueSize: uint32(valueSize), maxEntries: uint32(entries)}
	return bpfCall(unix.BPF_MAP_CREATE, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
}

func bpfProgLoad(typ, attachType int, insns []bpfInsn) (int, error) {
	license := []byte("GPL\x00")
	logBuf := make([]byte, 64<<10)
	attr := struct {
		progType, insnCnt   uint32
		insns, license      uint64
		logLevel, logSize   uint32
		logBuf              uint64
		kernVersion, flags  uint32
		name                [16]byte
		ifindex, attachType uint32
		_                   [64]byte
	}{
		progType: uint32(typ), insnCnt: uint32(len(insns)),
		insns:    uint64(uintptr(unsafe.Pointer(&insns[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
		logLevel: 1, logSize: uint32(len(logBuf)), logBuf: uint64(uintptr(unsafe.Pointer(&logBuf[0]))),
		attachType: uint32(attachType),
	}
	copy(attr.name[:], "jnrelay_steer")
	fd, err := bpfCall(unix.BPF_PROG_LOAD, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	runtime.KeepAlive(license) // referenced only through attr's integers
	runtime.KeepAlive(insns)
	if err != nil {
		if n := indexNUL(logBuf); n > 0 {
			return -1, fmt.Errorf("%w: verifier: %s", err, logBuf[:n])
		}
		return -1, err
	}
	return fd, nil
}

func bpfLinkCreate(prog, target, attachType int) (int, error) {
	attr := struct {
		progFd, targetFd, attachType, flags uint32
		_                                   [48]byte
	}{progFd: uint32(prog), targetFd: uint32(target), attachType: uint32(attachType)}
	return bpfCall(unix.BPF_LINK_CREATE, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
}

func indexNUL(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}
