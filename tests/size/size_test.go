// Package size enforces relayd's flash budget: the stripped linux/arm v7
// binary (the most common donor board) must stay within 11 MiB. make cross
// writes the full per-target report to docs/size.md.
package size

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

const budgetARMv7 = 11 << 20

func TestARMv7BinaryWithinBudget(t *testing.T) {
	out := filepath.Join(t.TempDir(), "relayd-armv7")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "github.com/jnrelay/jnrelay/relayd")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm", "GOARM=7", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cross build: %v\n%s", err, b)
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("linux/arm v7 stripped: %d bytes (%.2f MiB), budget %.0f MiB", fi.Size(), float64(fi.Size())/(1<<20), float64(budgetARMv7)/(1<<20))
	if fi.Size() > budgetARMv7 {
		t.Fatalf("relayd for linux/arm v7 is %d bytes, over the %d-byte flash budget: find what grew (go tool nm -size -sort size)", fi.Size(), budgetARMv7)
	}
}
