package ebpf

// HelperMapLookupElem is bpf_map_lookup_elem's helper number.
const HelperMapLookupElem = 1

// Asm is a tiny assembler for the hand-written programs: instructions
// plus jumps to named labels, resolved by Program. The zero value is
// ready to use. Its bookkeeping is slices searched linearly (a program
// has a handful of labels) and its methods are not inlined: every call
// site is in a program's generator, and flash, not speed, is what they
// cost.
type Asm struct {
	insns  []Insn
	jumps  []mark // a jump's index and its target label
	labels []mark // a label and the index it names
}

type mark struct {
	name string
	at   int
}

// Emit appends instructions.
//
//go:noinline
func (a *Asm) Emit(in ...Insn) { a.insns = append(a.insns, in...) }

// Jump appends a jump (op, comparing dst with src or imm) to label.
//
//go:noinline
func (a *Asm) Jump(op uint8, dst, src uint8, imm int32, label string) {
	a.jumps = append(a.jumps, mark{label, len(a.insns)})
	a.Emit(I(op, dst, src, 0, imm))
}

// Label names the next instruction.
//
//go:noinline
func (a *Asm) Label(name string) { a.labels = append(a.labels, mark{name, len(a.insns)}) }

// Lookup appends r0 = bpf_map_lookup_elem(map, r10+key): the key is on
// the stack at offset key.
func (a *Asm) Lookup(mapFD int, key int16) {
	m := LoadMapFD(1, mapFD)
	a.Emit(m[:]...)
	a.Emit(
		I(OpMovReg, 2, 10, 0, 0),
		I(OpAddImm, 2, 0, 0, int32(key)),
		I(OpCall, 0, 0, 0, HelperMapLookupElem),
	)
}

// Program resolves the jumps and returns the instructions. A jump to a
// label never defined is a bug of the program's author: it panics.
func (a *Asm) Program() []Insn {
	for _, j := range a.jumps {
		target := -1
		for _, l := range a.labels {
			if l.name == j.name {
				target = l.at
			}
		}
		if target < 0 {
			panic("ebpf: undefined label " + j.name)
		}
		a.insns[j.at].Off = int16(target - j.at - 1)
	}
	return a.insns
}
