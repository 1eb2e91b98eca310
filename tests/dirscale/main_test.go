// Package dirscale measures relay directories at scale: thousands of
// lightweight publishers (client accounts speaking real XMPP through
// relayd's own session code, publishing items made by relayd/directory's
// encoder) on two mirrored Prosody or ejabberd servers, read by a real
// relayd tracker. See docs/directory.md ("Scale") for the figures.
//
// `go test ./tests/dirscale` is the smoke run (20 publishers on Prosody,
// correctness only, needs root). The measurement is `make bench-directory`
// (the Makefile spells out its flags; DIRSCALE_N sets the relays).
package dirscale

import (
	"flag"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/jnrelay/jnrelay/tests/harness"
)

// relaydBin is the tracker's binary: $RELAYD_BIN, or one built for this run.
var relaydBin string

var (
	flagN       = flag.Int("dirscale.n", 20, "relays publishing from the start")
	flagFresh   = flag.Int("dirscale.fresh", 10, "new relays published one at a time, each timed until the tracker learns it")
	flagUpdates = flag.Int("dirscale.updates", 20, "item updates whose server CPU is measured (per phase)")
	flagSubs    = flag.Int("dirscale.subscribers", 5, "extra subscribers of the second update phase (marginal fan-out cost)")
	flagLookups = flag.Int("dirscale.lookups", 20, "<services/> lookups timed at the tracker")
	flagServers = flag.String("dirscale.servers", "prosody", "servers to run on: prosody, ejabberd or both, comma-separated")
	flagStorage = flag.String("dirscale.prosody-storage", "", "Prosody's storage for its pubsub service: \"\" (its default, internal files) or memory")
	flagOut     = flag.String("dirscale.out", "", "markdown file the figures are written to")
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	// Thousands of connections: the servers (our children) inherit a
	// raised soft limit only when this process raised it itself.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			fmt.Fprintln(os.Stderr, "raise the open-files limit:", err)
		}
	}
	bin, done, err := harness.RelaydBinary("relayd-dirscale-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer done()
	relaydBin = bin
	return m.Run()
}
