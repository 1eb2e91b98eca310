package randid

import (
	"regexp"
	"testing"
)

func TestHex(t *testing.T) {
	hexDigits := regexp.MustCompile(`^[0-9a-f]+$`)
	seen := map[string]bool{}
	for range 1000 {
		id := Hex(16)
		if len(id) != 32 || !hexDigits.MatchString(id) {
			t.Fatalf("Hex(16) = %q, want 32 lowercase hex digits", id)
		}
		if seen[id] {
			t.Fatalf("Hex(16) repeated %q within 1000 calls", id)
		}
		seen[id] = true
	}
	if got := Hex(0); got != "" {
		t.Fatalf("Hex(0) = %q, want empty", got)
	}
}
