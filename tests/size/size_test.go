// Package size enforces relayd's flash budget: the stripped linux/arm v7
// binary (the most common donor board) must stay within 11 MiB. make cross
// writes the full per-target report to docs/size.md.
package size

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

const budgetARMv7 = 11 << 20

func TestARMv7BinaryWithinBudget(t *testing.T) {
	out := filepath.Join(t.TempDir(), "relayd-armv7")
	// As make cross builds it: every feature, both fast paths included.
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

// crossBudgets are the flash budgets of every `make cross` target,
// stripped, every target built with every feature (image/cross.sh). MIPS
// code is about 15% larger than ARM's for the same program. The
// xz-compressed size is what a squashfs or a compressed package costs on
// flash.
var crossBudgets = map[string]int64{
	"relayd-linux-armv6":  11 << 20,
	"relayd-linux-armv7":  11 << 20,
	"relayd-linux-arm64":  12 << 20,
	"relayd-linux-mipsle": 12<<20 + 512<<10,
	"relayd-linux-mips":   12<<20 + 512<<10,
	"relayd-linux-amd64":  12 << 20,
}

// budgetXZ is the compressed budget: what lands on a router's flash. The
// amd64 build (x86 boxes and VMs, disks not flash) gets half a MiB more.
func budgetXZ(name string) int64 {
	if name == "relayd-linux-amd64" {
		return 4 << 20
	}
	return 3<<20 + 512<<10
}

// TestCrossBinariesWithinBudget checks what `make cross` built, when
// JNRELAY_CROSS_DIR names its output (make test-image does): every target
// present, static, within its budget stripped and xz-compressed.
func TestCrossBinariesWithinBudget(t *testing.T) {
	dir := os.Getenv("JNRELAY_CROSS_DIR")
	if dir == "" {
		t.Skip("skipping: JNRELAY_CROSS_DIR is not set (make test-image sets it after make cross)")
	}
	for name, budget := range crossBudgets {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // xz -9e takes seconds per binary
			path := filepath.Join(dir, name)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatalf("%v (make cross builds every target)", err)
			}
			xz, err := exec.Command("sh", "-c", `xz -9e -T1 -c "$1" | wc -c`, "sh", path).Output()
			if err != nil {
				t.Fatalf("xz: %v", err)
			}
			var xzSize int64
			if _, err := fmt.Sscan(string(xz), &xzSize); err != nil {
				t.Fatalf("xz size %q: %v", xz, err)
			}
			t.Logf("%s: %.2f MiB stripped (budget %.2f), %.2f MiB xz (budget %.2f)", name,
				float64(fi.Size())/(1<<20), float64(budget)/(1<<20), float64(xzSize)/(1<<20), float64(budgetXZ(name))/(1<<20))
			if fi.Size() > budget {
				t.Errorf("%s is %d bytes, over its %d-byte budget", name, fi.Size(), budget)
			}
			if xzSize > budgetXZ(name) {
				t.Errorf("%s compresses to %d bytes, over the %d-byte flash budget", name, xzSize, budgetXZ(name))
			}
		})
	}
}
