package ebpf

import "testing"

func TestAsmResolvesJumps(t *testing.T) {
	var a Asm
	a.Jump(OpJeqImm, 1, 0, 0, "end") // 0: to 4
	a.Emit(I(OpMovImm, 0, 0, 0, 1))  // 1
	a.Label("mid")
	a.Jump(OpJneImm, 1, 0, 7, "end") // 2: to 4
	a.Emit(I(OpMovImm, 0, 0, 0, 2))  // 3
	a.Label("end")
	a.Emit(I(OpExit, 0, 0, 0, 0)) // 4
	p := a.Program()
	if len(p) != 5 {
		t.Fatalf("%d instructions, want 5", len(p))
	}
	for i, want := range map[int]int16{0: 3, 2: 1} {
		if p[i].Off != want {
			t.Errorf("jump at %d: offset %d, want %d", i, p[i].Off, want)
		}
	}
}

func TestAsmUndefinedLabelPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("a jump to an undefined label assembled")
		}
	}()
	var a Asm
	a.Jump(OpJeqImm, 1, 0, 0, "nowhere")
	a.Program()
}
