package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// RelaydBinary is the relayd binary a suite runs: $RELAYD_BIN (make
// sets it to bin/relayd), or one built into a fresh temporary directory
// named after prefix, which done removes.
func RelaydBinary(prefix string) (bin string, done func(), err error) {
	if bin := os.Getenv("RELAYD_BIN"); bin != "" {
		return bin, func() {}, nil
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	done = func() { os.RemoveAll(dir) }
	bin = filepath.Join(dir, "relayd")
	build := exec.Command("go", "build", "-o", bin, "github.com/jnrelay/jnrelay/relayd")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		done()
		return "", nil, fmt.Errorf("build relayd: %w", err)
	}
	return bin, done, nil
}
