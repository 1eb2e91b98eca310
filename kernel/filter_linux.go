package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// skfNetOff is SKF_NET_OFF (-0x100000) as the unsigned 32-bit offset of a
// classic BPF load: loads at skfNetOff+n read byte n of the network (IP)
// header, which a UDP socket filter cannot otherwise reach because the
// packet data it sees starts at the UDP header.
const skfNetOff = 1<<32 - 0x100000

// Offsets the source filter loads from, verified on Linux 6.18 for AF_INET
// sockets, AF_INET6 sockets and IPv4 datagrams on dual-stack AF_INET6
// sockets by having a filter return the loaded byte as the datagram length.
const (
	udpSrcPortOff = 0              // UDP source port: the filter's data starts at the UDP header
	ipVersionOff  = skfNetOff + 0  // high nibble: IP version
	ipv4SrcOff    = skfNetOff + 12 // IPv4 source address
	ipv6SrcOff    = skfNetOff + 8  // IPv6 source address, 16 bytes
)

// AttachSourceFilter attaches a classic BPF program to fd so the kernel
// itself drops every datagram whose source is not src, before it is queued:
// a latched relay port then costs no wakeup, copy or buffer space for
// anyone else's traffic. It needs no privilege. Attaching replaces any
// filter already on fd atomically, so re-latching to a new source leaves no
// window in which both or neither are accepted.
//
// An IPv4 src (or IPv4-mapped IPv6 src, for a dual-stack socket) matches
// IPv4 datagrams only; an IPv6 src matches IPv6 datagrams only.
//
// Datagrams queued before the filter was attached are still delivered, so
// the reader must keep checking sources itself. Rejected datagrams are not
// seen by userspace but are counted in the socket's drop counter (Drops,
// ParseRxqOvfl) together with receive-buffer overflows. While the filter is
// on, userspace also cannot notice a new source (a NAT rebinding): detach
// it once the latched source has been silent for the grace period.
func AttachSourceFilter(fd int, src netip.AddrPort) error {
	prog, err := sourceFilter(src)
	if err != nil {
		return fmt.Errorf("attach source filter for %s on fd %d: %w", src, fd, err)
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return fmt.Errorf("assemble source filter for %s: %w", src, err)
	}
	insns := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		insns[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(insns)), Filter: &insns[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("attach source filter for %s on fd %d: %w", src, fd, err)
	}
	return nil
}

// DetachFilter removes the socket filter from fd so every source reaches
// userspace again, e.g. to let a new source latch. It is idempotent: a
// socket without a filter is not an error.
func DetachFilter(fd int) error {
	err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("detach socket filter on fd %d: %w", fd, err)
	}
	return nil
}

// attachDropAll attaches a classic BPF filter that drops every datagram
// fd would receive, counted in its drop counter: a sink the kernel
// empties itself.
func attachDropAll(fd int) error {
	insns := []unix.SockFilter{{Code: 0x06, K: 0}} // BPF_RET | BPF_K: keep 0 bytes
	fprog := unix.SockFprog{Len: 1, Filter: &insns[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("attach drop-all filter on fd %d: %w", fd, err)
	}
	return nil
}

// sourceFilter returns the program accepting only datagrams from src.
// Each check loads a value and jumps to the final "drop" on mismatch; the
// cheapest and most selective check, the port, comes first.
func sourceFilter(src netip.AddrPort) ([]bpf.Instruction, error) {
	addr := src.Addr().Unmap()
	if !addr.IsValid() || src.Port() == 0 {
		return nil, fmt.Errorf("invalid source %s", src)
	}
	type check struct {
		load bpf.Instruction
		mask uint32 // ANDed with the loaded value when non-zero
		want uint32
	}
	checks := []check{{load: bpf.LoadAbsolute{Off: udpSrcPortOff, Size: 2}, want: uint32(src.Port())}}
	if addr.Is4() {
		a := addr.As4()
		checks = append(checks,
			check{load: bpf.LoadAbsolute{Off: ipVersionOff, Size: 1}, mask: 0xf0, want: 0x40},
			check{load: bpf.LoadAbsolute{Off: ipv4SrcOff, Size: 4}, want: binary.BigEndian.Uint32(a[:])})
	} else {
		a := addr.As16()
		checks = append(checks, check{load: bpf.LoadAbsolute{Off: ipVersionOff, Size: 1}, mask: 0xf0, want: 0x60})
		for i := 0; i < 16; i += 4 {
			checks = append(checks, check{
				load: bpf.LoadAbsolute{Off: ipv6SrcOff + uint32(i), Size: 4},
				want: binary.BigEndian.Uint32(a[i : i+4]),
			})
		}
	}
	// Lay out the checks, then point every mismatch jump at the drop.
	var prog []bpf.Instruction
	var jumps []int
	for _, c := range checks {
		prog = append(prog, c.load)
		if c.mask != 0 {
			prog = append(prog, bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: c.mask})
		}
		jumps = append(jumps, len(prog))
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: c.want})
	}
	prog = append(prog,
		bpf.RetConstant{Val: math.MaxUint32}, // accept the whole datagram
		bpf.RetConstant{Val: 0},              // drop
	)
	drop := len(prog) - 1
	for _, j := range jumps {
		jump := prog[j].(bpf.JumpIf)
		jump.SkipTrue = uint8(drop - j - 1)
		prog[j] = jump
	}
	return prog, nil
}
