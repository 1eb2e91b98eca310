// Package bench is jnrelay's side-by-side data-plane benchmark: relayd's
// data plane against a C reference forwarder and other relays, in network
// namespaces, relay pinned to one core and the traffic generator to the
// other. See README.md.
//
// `go test ./tests/bench` runs the smoke version (correctness only, a few
// seconds, needs root). The full benchmark runs with
//
//	go test -count=1 -run '^TestBench$' -v -timeout 120m ./tests/bench -args -bench.full -bench.out results.md
//
// or with JNRELAY_BENCH=full in the environment.
package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel"
	"github.com/jnrelay/jnrelay/tests/harness"
)

var (
	flagFull       = flag.Bool("bench.full", false, "run the full benchmark instead of the smoke test (also JNRELAY_BENCH=full)")
	flagOut        = flag.String("bench.out", "", "write the full benchmark's table as markdown to this file")
	flagContenders = flag.String("bench.contenders", "", "comma-separated contenders to run (default all): relayd,relayd-fastpath,relayd-ebpf,relayd-steered,relayd-packaged,cref,rtpengine,coturn,relayd-turn")
	flagBudget     = flag.Duration("bench.budget", 75*time.Minute, "full benchmark: stop starting new steps after this long")
	flagStep       = flag.Duration("bench.step", 5*time.Second, "full benchmark: sending time of one load step")
	flagFigures    = flag.String("bench.figures", "", "full benchmark: comma-separated figures to measure (default all): "+strings.Join(figureKeys, ","))
)

// figureKeys name the full benchmark's figures for -bench.figures, in the
// order they are measured.
var figureKeys = []string{"fixed", "load172", "load80", "hot", "half", "rss"}

// wanted reports whether -bench.figures asks for figure key.
func wanted(key string) bool {
	if *flagFigures == "" {
		return true
	}
	for _, k := range strings.Split(*flagFigures, ",") {
		if strings.TrimSpace(k) == key {
			return true
		}
	}
	return false
}

// all lists the contenders in table order; the baseline always runs.
func all() []*contender {
	return []*contender{relaydC, relaydFastC, relaydEBPFC, relaydSteeredC, relaydPackagedC, crefC, rtpengineC, coturnC, relaydTURNC}
}

func selected() []*contender {
	if *flagContenders == "" {
		return all()
	}
	var out []*contender
	for _, c := range all() {
		for _, k := range strings.Split(*flagContenders, ",") {
			if strings.TrimSpace(k) == c.key {
				out = append(out, c)
			}
		}
	}
	return out
}

func TestBench(t *testing.T) {
	harness.RequireRoot(t)
	if _, err := exec.LookPath("taskset"); err != nil {
		t.Skip("skipping: taskset (util-linux) is not installed; run tests/bench/deps.sh")
	}
	full := *flagFull || os.Getenv("JNRELAY_BENCH") == "full"
	e := setup(t, full)
	// Ctrl-C stops the run between steps and still cleans up (namespaces,
	// processes) through the test's cleanups.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if full {
		runFull(ctx, t, e)
		return
	}
	smoke(ctx, t, e)
}

// setup builds the tools and the topology.
func setup(t *testing.T, full bool) *env {
	t.Helper()
	if full {
		// The runner itself stays off the relay's core.
		pinSelf(t)
	}
	dir := t.TempDir()
	e := &env{dir: dir, rtpload: filepath.Join(dir, "rtpload"), dpbench: filepath.Join(dir, "dpbench")}
	e.maxChannels = raiseNofile(t)
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go toolchain not in PATH: %v", err)
	}
	for _, b := range []struct{ out, pkg string }{{e.rtpload, "./cmd/rtpload"}, {e.dpbench, "./cmd/dpbench"}} {
		cmd := exec.Command(goBin, "build", "-o", b.out, b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	if gcc, err := exec.LookPath("gcc"); err == nil {
		e.cref = filepath.Join(dir, "cref-relay")
		if out, err := exec.Command(gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", e.cref, "cref/relay.c").CombinedOutput(); err != nil {
			t.Fatalf("gcc cref/relay.c: %v\n%s", err, out)
		}
	}
	e.topo = newTopo(t)
	return e
}

// raiseNofile raises RLIMIT_NOFILE for the relays, which children
// inherit (setting it explicitly also stops os/exec from restoring the
// original soft limit in them), and returns how many four-port channels
// fit. 10,000 channels are 40,000 sockets; without CAP_SYS_RESOURCE (some
// containers) the hard limit cannot be raised and the channel counts are
// capped to what it allows.
func raiseNofile(t *testing.T) int {
	want := syscall.Rlimit{Cur: 200000, Max: 200000}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return 10000
	}
	var cur syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	cur.Cur = cur.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &cur); err != nil {
		t.Fatalf("raise RLIMIT_NOFILE soft limit: %v", err)
	}
	n := int(min(10000, (cur.Max-256)/4)) / 100 * 100
	t.Logf("RLIMIT_NOFILE hard limit is %d and cannot be raised here: at most %d channels per relay", cur.Max, n)
	return n
}

// pinSelf moves every thread of the test process to the generator core;
// threads created later inherit it.
func pinSelf(t *testing.T) {
	var set unix.CPUSet
	set.Set(1)
	tasks, _ := filepath.Glob("/proc/self/task/*")
	for _, task := range tasks {
		var tid int
		if _, err := fmt.Sscanf(filepath.Base(task), "%d", &tid); err == nil {
			if err := unix.SchedSetaffinity(tid, &set); err != nil {
				t.Logf("pin runner thread %d to core 1: %v", tid, err)
			}
		}
	}
}

// smoke runs 20 channels × 50 packets/s each way for 1 s through every
// contender and checks that every packet arrived, once, intact, at the
// right endpoint from the right source, and that the relay's own counters
// agree exactly. No timing is asserted.
func smoke(ctx context.Context, t *testing.T, e *env) {
	const n = 20
	for _, c := range append([]*contender{baseline}, selected()...) {
		t.Run(c.key, func(t *testing.T) {
			if c.available != nil {
				if why := c.available(); why != "" {
					t.Skip("skipping: " + why)
				}
			}
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			st, err := e.run(ctx, t, c, spec{channels: n, size: 172, rateA: 50, rateB: 50, duration: time.Second, verify: true,
				// A little more time to start: other work on the machine
				// must not make the generators miss their start time.
				lead: 300 * time.Millisecond})
			var skip errSkip
			if errors.As(err, &skip) {
				t.Skip("skipping: " + string(skip))
			}
			if err != nil {
				t.Fatal(err)
			}
			checkExact(t, c, st, n*50, n*50)
			if c == relaydPackagedC {
				// The point of the packaged column: without any
				// capability, relayd got the kernel fast path
				// through the broker.
				var fin struct {
					Kernel uint64 `json:"kernel_forwarded"`
				}
				if err := lastJSON(st.relayFinal, &fin); err != nil || fin.Kernel == 0 {
					t.Errorf("packaged relayd: the kernel forwarded nothing through the offload broker (%v)", err)
				}
				t.Logf("packaged relayd: the kernel forwarded %d packets through the broker's table", fin.Kernel)
			}
			if c.exact {
				// A hot flow: one channel, one way, 10,000 packets/s, so the
				// relay reads full batches (and relayd sends them with UDP
				// GSO where the kernel has it): still every packet, intact
				// and in order.
				st, err := e.run(ctx, t, c, spec{channels: 1, size: 172, rateA: 10000, rateB: 0, duration: time.Second, verify: true,
					lead: 300 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				checkExact(t, c, st, 10000, 0)
				if c == relaydC && kernel.Detect().GSO {
					var fin struct {
						Segmented uint64 `json:"segmented"`
					}
					if err := lastJSON(st.relayFinal, &fin); err != nil || fin.Segmented == 0 {
						t.Errorf("hot flow: relayd sent no datagram inside a GSO message (%v)", err)
					}
					t.Logf("hot flow: %d of 10,000 datagrams went out inside another's GSO message", fin.Segmented)
				}
			}
		})
	}
}

// checkExact asserts an exact run of wantA packets from side a and wantB
// from side b: every packet arrives once, intact, at the right endpoint,
// and the relay's counters agree. The one loss it accepts is the kernel's
// own, counted: datagrams the relay's receive buffers overflowed with
// while a loaded machine left the relay unscheduled (relay rcvbuf, read
// from the kernel's counters). Then exactly that many may be missing, and
// no other figure moves; silent loss fails as before.
func checkExact(t *testing.T, c *contender, st *step, wantA, wantB uint64) {
	t.Helper()
	a, b := &st.a, &st.b
	if a.Planned != wantA || a.Sent != wantA || b.Planned != wantB || b.Sent != wantB {
		t.Errorf("planned/sent a %d/%d b %d/%d, want %d and %d", a.Planned, a.Sent, b.Planned, b.Sent, wantA, wantB)
	}
	overflowed := st.relayRcvbuf
	missing := (b.Sent - min(a.Received, b.Sent)) + (a.Sent - min(b.Received, a.Sent))
	if a.Received > b.Sent || b.Received > a.Sent || missing != overflowed {
		t.Errorf("received a %d (b sent %d), b %d (a sent %d): %d lost, %d of them counted by the kernel in the relay's receive buffers",
			a.Received, b.Sent, b.Received, a.Sent, st.lost, overflowed)
	}
	if overflowed > 0 {
		t.Logf("%s: the relay's receive buffers overflowed with %d datagrams (a loaded machine); each is counted by the kernel", c.name, overflowed)
	}
	incomplete := uint64(a.Incomplete + b.Incomplete)
	if overflowed > 0 {
		incomplete = 0 // a flow short of counted overflow is not a relay fault
	}
	for name, v := range map[string]uint64{
		"duplicates": a.Duplicates + b.Duplicates, "bad": a.Bad + b.Bad, "misrouted": a.Misrouted + b.Misrouted,
		"truncated": a.Truncated + b.Truncated, "send errors": a.SendErrors + b.SendErrors,
		"sink drops": a.SinkDrops + b.SinkDrops, "incomplete flows": incomplete,
	} {
		if v != 0 {
			t.Errorf("%s: %d, want 0", name, v)
		}
	}
	if c.exact {
		if !st.counted {
			t.Errorf("%s printed no final counters", c.name)
		} else {
			fwd := a.Received + b.Received + a.PrimesRecv + b.PrimesRecv
			in := a.Sent + b.Sent + a.PrimesSent + b.PrimesSent
			if st.relayed != fwd {
				t.Errorf("relay counted %d relayed, sinks got %d (measured + primes)", st.relayed, fwd)
			}
			if st.relayed+st.dropped+overflowed != in {
				t.Errorf("relay counted %d relayed + %d dropped (+ %d its receive buffers overflowed with), generators sent %d (measured + primes)",
					st.relayed, st.dropped, overflowed, in)
			}
		}
	}
	t.Logf("%s: %s", c.name, st)
}
