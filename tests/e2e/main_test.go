// Package e2e proves relayd end to end: relayd in a "public" network
// namespace registered with a real Prosody or ejabberd, a third-party
// requester (python3-slixmpp) asking for channels, and media endpoints in
// caller, callee and attacker namespaces.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// relaydBin is the binary under test: $RELAYD_BIN, or one built for this run.
var relaydBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	relaydBin = os.Getenv("RELAYD_BIN")
	if relaydBin == "" {
		dir, err := os.MkdirTemp("", "relayd-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		relaydBin = filepath.Join(dir, "relayd")
		build := exec.Command("go", "build", "-o", relaydBin, "github.com/jnrelay/jnrelay/relayd")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build relayd:", err)
			return 1
		}
	}
	return m.Run()
}
