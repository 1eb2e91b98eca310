// Package e2e proves relayd end to end: relayd in a "public" network
// namespace registered with a real Prosody or ejabberd, a third-party
// requester (python3-slixmpp) asking for channels, and media endpoints in
// caller, callee and attacker namespaces.
package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/jnrelay/jnrelay/tests/harness"
)

// relaydBin is the binary under test: $RELAYD_BIN, or one built for this run.
var relaydBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	bin, done, err := harness.RelaydBinary("relayd-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer done()
	relaydBin = bin
	return m.Run()
}
