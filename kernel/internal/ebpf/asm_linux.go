package ebpf

// HelperMapLookupElem is bpf_map_lookup_elem's helper number.
const HelperMapLookupElem = 1

// Asm is a tiny assembler for the hand-written programs: instructions
// plus jumps to named labels, resolved by Program. The zero value is
// ready to use.
type Asm struct {
	insns  []Insn
	fixups map[string][]int // label: indexes of the jumps to it
	labels map[string]int
}

// Emit appends instructions.
func (a *Asm) Emit(in ...Insn) { a.insns = append(a.insns, in...) }

// Jump appends a jump (op, comparing dst with src or imm) to label.
func (a *Asm) Jump(op uint8, dst, src uint8, imm int32, label string) {
	if a.fixups == nil {
		a.fixups = map[string][]int{}
	}
	a.fixups[label] = append(a.fixups[label], len(a.insns))
	a.Emit(I(op, dst, src, 0, imm))
}

// Label names the next instruction.
func (a *Asm) Label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.insns)
}

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
	for name, at := range a.fixups {
		target, ok := a.labels[name]
		if !ok {
			panic("ebpf: undefined label " + name)
		}
		for _, i := range at {
			a.insns[i].Off = int16(target - i - 1)
		}
	}
	return a.insns
}
