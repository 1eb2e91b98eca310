// Package ebpf is the small part of bpf(2) relayd needs: maps, program
// loading, links and an assembler's worth of instruction encoding. The
// programs that use it (kernel.Steering, kernel/tcfwd) are assembled by
// hand, so no eBPF library or compiler output is linked and 32-bit boards
// pay a few kilobytes for it.
package ebpf

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Insn is struct bpf_insn.
type Insn struct {
	Code uint8
	regs uint8 // dst_reg and src_reg, 4 bits each, in the host's bit-field order
	Off  int16
	Imm  int32
}

// I encodes one instruction in little-endian register order; ProgLoad
// swaps the nibbles on big-endian hosts. (No branch here keeps the
// hand-assembled programs' code small: every I is inlined.)
func I(code uint8, dst, src uint8, off int16, imm int32) Insn {
	return Insn{Code: code, regs: dst | src<<4, Off: off, Imm: imm}
}

// hostOrder returns insns with the register nibbles in the host's
// bit-field order.
func hostOrder(insns []Insn) []Insn {
	if !bigEndian {
		return insns
	}
	out := make([]Insn, len(insns))
	for i, in := range insns {
		in.regs = in.regs<<4 | in.regs>>4
		out[i] = in
	}
	return out
}

// LoadMapFD is the two-instruction load of a map's descriptor into dst.
func LoadMapFD(dst uint8, fd int) [2]Insn {
	return [2]Insn{I(OpLdImm64, dst, unix.BPF_PSEUDO_MAP_FD, 0, int32(fd)), {}}
}

// bigEndian is the host's byte order, which decides the register nibbles'
// order.
var bigEndian = func() bool {
	x := uint16(1)
	return (*[2]byte)(unsafe.Pointer(&x))[0] == 0
}()

// Opcodes, as include/uapi/linux/bpf.h composes them.
const (
	OpMovReg   = 0xbf // BPF_ALU64 | BPF_MOV | BPF_X
	OpMovImm   = 0xb7 // BPF_ALU64 | BPF_MOV | BPF_K
	OpAddReg   = 0x0f // BPF_ALU64 | BPF_ADD | BPF_X
	OpAddImm   = 0x07 // BPF_ALU64 | BPF_ADD | BPF_K
	OpSubImm   = 0x17 // BPF_ALU64 | BPF_SUB | BPF_K
	OpAndImm   = 0x57 // BPF_ALU64 | BPF_AND | BPF_K
	OpRshImm   = 0x77 // BPF_ALU64 | BPF_RSH | BPF_K
	OpXor32Imm = 0xa4 // BPF_ALU | BPF_XOR | BPF_K: with imm -1, a 32-bit not
	OpMov32Reg = 0xbc // BPF_ALU | BPF_MOV | BPF_X: zero-extends
	OpToBE     = 0xdc // BPF_ALU | BPF_END | BPF_TO_BE: host <-> network order
	OpMod32Imm = 0x94 // BPF_ALU | BPF_MOD | BPF_K
	OpLdxB     = 0x71 // BPF_LDX | BPF_MEM | BPF_B
	OpLdxH     = 0x69 // BPF_LDX | BPF_MEM | BPF_H
	OpLdxW     = 0x61 // BPF_LDX | BPF_MEM | BPF_W
	OpStxH     = 0x6b // BPF_STX | BPF_MEM | BPF_H
	OpStxW     = 0x63 // BPF_STX | BPF_MEM | BPF_W
	OpStB      = 0x72 // BPF_ST | BPF_MEM | BPF_B
	OpStH      = 0x6a // BPF_ST | BPF_MEM | BPF_H
	OpStDW     = 0x7a // BPF_ST | BPF_MEM | BPF_DW
	OpXaddDW   = 0xdb // BPF_STX | BPF_ATOMIC | BPF_DW, imm BPF_ADD
	OpLdImm64  = 0x18 // BPF_LD | BPF_DW | BPF_IMM (two instructions)
	OpJeqImm   = 0x15 // BPF_JMP | BPF_JEQ | BPF_K
	OpJneImm   = 0x55 // BPF_JMP | BPF_JNE | BPF_K
	OpJgtImm   = 0x25 // BPF_JMP | BPF_JGT | BPF_K
	OpJltImm   = 0xa5 // BPF_JMP | BPF_JLT | BPF_K
	OpJgtReg   = 0x2d // BPF_JMP | BPF_JGT | BPF_X
	OpJneReg   = 0x5d // BPF_JMP | BPF_JNE | BPF_X
	OpJa       = 0x05 // BPF_JMP | BPF_JA: unconditional
	OpCall     = 0x85 // BPF_JMP | BPF_CALL
	OpExit     = 0x95 // BPF_JMP | BPF_EXIT
)

// Call is the bpf(2) system call.
func Call(cmd int, attr unsafe.Pointer, size uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

// MapCreate creates a map; flags are BPF_F_* map flags.
func MapCreate(typ, keySize, valueSize, entries int, flags uint32) (int, error) {
	attr := struct {
		mapType, keySize, valueSize, maxEntries, mapFlags uint32
		_                                                 [108]byte
	}{mapType: uint32(typ), keySize: uint32(keySize), valueSize: uint32(valueSize), maxEntries: uint32(entries), mapFlags: flags}
	return Call(unix.BPF_MAP_CREATE, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
}

// mapElemAttr is the BPF_MAP_*_ELEM part of union bpf_attr.
type mapElemAttr struct {
	fd         uint32
	_          uint32
	key, value uint64
	flags      uint64
}

func ptr(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

func mapElem(cmd, fd int, key, value []byte, flags uint64) error {
	attr := mapElemAttr{fd: uint32(fd), key: ptr(key), value: ptr(value), flags: flags}
	_, err := Call(cmd, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	runtime.KeepAlive(key) // referenced only through attr's integers
	runtime.KeepAlive(value)
	return err
}

// MapUpdate sets key to value (flags: BPF_ANY, BPF_NOEXIST, BPF_EXIST).
func MapUpdate(fd int, key, value []byte, flags uint64) error {
	return mapElem(unix.BPF_MAP_UPDATE_ELEM, fd, key, value, flags)
}

// MapLookup reads key's value into value.
func MapLookup(fd int, key, value []byte) error {
	return mapElem(unix.BPF_MAP_LOOKUP_ELEM, fd, key, value, 0)
}

// MapDelete removes key.
func MapDelete(fd int, key []byte) error {
	return mapElem(unix.BPF_MAP_DELETE_ELEM, fd, key, nil, 0)
}

// MapLookupBatch reads up to len(keys)/keySize elements of a hash map
// into keys and values, resuming after the position in token (nil: from
// the start) and writing the next position to next (4 bytes for hash
// maps). It returns how many it read and whether the map is exhausted.
// Linux ≥ 5.6; older kernels answer EINVAL.
func MapLookupBatch(fd int, token, next, keys, values []byte, count int) (int, bool, error) {
	attr := struct {
		inBatch, outBatch, keys, values uint64
		count, mapFd                    uint32
		elemFlags, flags                uint64
	}{inBatch: ptr(token), outBatch: ptr(next), keys: ptr(keys), values: ptr(values), count: uint32(count), mapFd: uint32(fd)}
	_, err := Call(unix.BPF_MAP_LOOKUP_BATCH, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	runtime.KeepAlive(token)
	runtime.KeepAlive(next)
	runtime.KeepAlive(keys)
	runtime.KeepAlive(values)
	if errors.Is(err, unix.ENOENT) {
		return int(attr.count), true, nil
	}
	return int(attr.count), false, err
}

// ProgLoad loads a GPL program (its helpers need it) named name; a
// verifier rejection returns the verifier's log in the error.
func ProgLoad(typ, attachType int, name string, insns []Insn) (int, error) {
	insns = hostOrder(insns)
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
		license:  ptr(license),
		logLevel: 1, logSize: uint32(len(logBuf)), logBuf: ptr(logBuf),
		attachType: uint32(attachType),
	}
	copy(attr.name[:15], name)
	fd, err := Call(unix.BPF_PROG_LOAD, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	runtime.KeepAlive(license) // referenced only through attr's integers
	runtime.KeepAlive(insns)
	runtime.KeepAlive(logBuf)
	if err != nil {
		if n := indexNUL(logBuf); n > 0 {
			return -1, fmt.Errorf("%w: verifier: %s", err, logBuf[:n])
		}
		return -1, err
	}
	return fd, nil
}

// LinkCreate attaches prog to target (a network namespace or an
// interface index, by attachType) and returns the link: closing its last
// descriptor detaches the program, so a crashed process leaves nothing
// attached.
func LinkCreate(prog, target, attachType int, flags uint32) (int, error) {
	attr := struct {
		progFd, targetFd, attachType, flags uint32
		_                                   [48]byte
	}{progFd: uint32(prog), targetFd: uint32(target), attachType: uint32(attachType), flags: flags}
	return Call(unix.BPF_LINK_CREATE, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
}

func indexNUL(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}
