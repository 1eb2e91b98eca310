package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/tests/bench/load"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// Cores: the relay runs alone on relayCore; the generators, the runner and
// everything else on genCore.
const (
	relayCore = "0"
	genCore   = "1"
)

// env is what every step of a run shares.
type env struct {
	topo    *topo
	dir     string // scratch files
	rtpload string // binaries
	dpbench string
	cref    string // "" when gcc is missing
	relayd  string // relayd itself, found or built on first use (relaydBinary)
	// maxChannels is how many channels a relay may hold here (file
	// descriptor limit), at most 10,000.
	maxChannels int
}

// proc is a process started inside a namespace, pinned to a core.
type proc struct {
	name   string
	cmd    *exec.Cmd
	lines  chan string // stdout, line by line
	stderr *capBuffer
	done   chan struct{}
	err    error // Wait's, valid after done
}

// startProc runs name inside namespace ns pinned to core. taskset and
// `ip netns exec` both exec, so the process's PID is the program's own.
func startProc(ctx context.Context, core, ns string, extraEnv []string, name string, args ...string) (*proc, error) {
	all := append([]string{"-c", core, "ip", "netns", "exec", ns, name}, args...)
	cmd := exec.CommandContext(ctx, "taskset", all...)
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.WaitDelay = 5 * time.Second
	// If the runner dies, so do the relays and generators it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &proc{name: filepath.Base(name), cmd: cmd, lines: make(chan string, 1024),
		stderr: &capBuffer{max: 64 << 10}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 64<<20) // rtpload's result carries a histogram
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// line waits for the next stdout line starting with prefix.
func (p *proc) line(prefix string, timeout time.Duration) (string, error) {
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				<-p.done
				return "", fmt.Errorf("%s exited before printing %q: %v; stderr: %s", p.name, prefix, p.err, p.stderr)
			}
			if strings.HasPrefix(l, prefix) {
				return l, nil
			}
		case <-tm.C:
			return "", fmt.Errorf("%s printed no %q within %v; stderr: %s", p.name, prefix, timeout, p.stderr)
		}
	}
}

// stop sends SIGTERM and returns the rest of stdout; after timeout it
// kills the process. Exiting 0 or dying of the SIGTERM itself
// (turnserver installs no handler) are both a clean stop.
func (p *proc) stop(timeout time.Duration) ([]string, error) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	return p.drain(timeout, "stop within %v after SIGTERM", func(err error) bool {
		var ee *exec.ExitError
		return err == nil || errors.As(err, &ee) && termed(ee)
	})
}

func termed(ee *exec.ExitError) bool {
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && (ws.Exited() && ws.ExitStatus() == 0 || ws.Signaled() && ws.Signal() == syscall.SIGTERM)
}

// wait waits for the process to exit on its own.
func (p *proc) wait(timeout time.Duration) ([]string, error) {
	return p.drain(timeout, "finish within %v", func(err error) bool { return err == nil })
}

// drain collects stdout until the process exits (clean says whether its
// exit error is acceptable) or timeout passes, when it is killed.
func (p *proc) drain(timeout time.Duration, late string, clean func(error) bool) ([]string, error) {
	var out []string
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				<-p.done
				if !clean(p.err) {
					return out, fmt.Errorf("%s: %v; stderr: %s", p.name, p.err, p.stderr)
				}
				return out, nil
			}
			out = append(out, l)
		case <-tm.C:
			_ = p.cmd.Process.Kill()
			<-p.done
			return out, fmt.Errorf("%s did not "+late, p.name, timeout)
		}
	}
}

// capBuffer keeps the first max bytes written to it.
type capBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *capBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (b *capBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(b.buf.String())
}

// relay is a running contender, ready for traffic.
type relay struct {
	proc *proc // nil for the kernel-forwarding baseline
	// Where flow i sends, per side.
	targetsA, targetsB []netip.AddrPort
	// turn makes side a a TURN client of the relay (coturn, relayd's
	// TURN server): targetsA are the server, targetsB come from side a's
	// allocations (see cmd/rtpload -turn), authenticated with turnUser
	// and turnPassword when set.
	turn                   bool
	turnUser, turnPassword string
	allocPerSec            float64
	// counters parses the relay's final stdout lines: packets it relayed
	// and dropped (ok false when the contender reports none).
	counters func(lines []string) (relayed, dropped uint64, ok bool)
	cleanup  func()
	final    []string // its last stdout lines, once stopped
}

// stopRelay stops r and returns its final counters.
func (r *relay) stop() (relayed, dropped uint64, ok bool, err error) {
	if r.cleanup != nil {
		defer r.cleanup()
	}
	if r.proc == nil {
		return 0, 0, false, nil
	}
	lines, err := r.proc.stop(60 * time.Second)
	if err != nil {
		return 0, 0, false, err
	}
	r.final = lines
	if r.counters != nil {
		relayed, dropped, ok = r.counters(lines)
	}
	return relayed, dropped, ok, nil
}

// contender is one relay implementation under test.
type contender struct {
	key  string // for -bench.contenders
	name string // in the table
	// start runs the relay with n channels allocated and returns it ready.
	start func(ctx context.Context, t testing.TB, e *env, n int) (*relay, error)
	// exact: the relay reports counters that must match the sinks exactly.
	exact bool
	// available, when set, says why the contender cannot run here ("" if
	// it can).
	available func() string
	// fdFree: its channels hold no file descriptors, so the open-file
	// limit does not cap its channel count (relayd with steered ports).
	fdFree bool
}

// maxChannels is how many channels c may hold here: 10,000, or what the
// open-file limit allows for a relay with sockets per port.
func (e *env) maxChannelsOf(c *contender) int {
	if c.fdFree {
		return 10000
	}
	return e.maxChannels
}

// spec is one measurement.
type spec struct {
	channels     int
	size         int
	rateA, rateB float64 // packets per second per flow sent by each side
	duration     time.Duration
	verify       bool
	lead         time.Duration // extra time before sending starts (0: computed)
}

// step is the outcome of one measurement.
type step struct {
	spec
	a, b             load.Result
	sent, received   uint64
	lost             int64
	loss             float64 // lost / sent
	p50, p99, max    time.Duration
	pps              float64 // received (relayed) packets per second
	relayCoreSec     float64 // busy time of the relay's core over the window
	genCoreSec       float64 // busy time of the generators' core
	systemSec        float64 // busy time of all cores
	procSec          float64 // relay process user+system time
	foreignSec       float64 // CPU used by processes not ours during the window (estimate)
	window           float64 // seconds
	rssKB, hwmKB     int
	behind           time.Duration // worst lateness of either generator
	relayed, dropped uint64        // relay's own counters, if it reports them
	counted          bool
	relayFinal       []string // the relay's last stdout lines
	allocPerSec      float64  // channel set-up rate the relay reported
	// Where packets were dropped, from the kernel's counters over the whole
	// step: UDP receive-buffer overflows in the relay namespace and on the
	// generators' side, and backlog (netdev_max_backlog) drops on any core.
	relayRcvbuf, genRcvbuf, backlog uint64
}

// clean is the benchmark's definition of a load the relay handles.
func (s *step) clean() bool {
	return s.loss <= 0.001 && s.p99 <= 5*time.Millisecond
}

// disturbed reports whether processes other than ours used more than 5%
// of a core during the window.
func (s *step) disturbed() bool { return s.foreignSec > 0.05*s.window }

// genLimited reports whether the generators, not the relay, fell short:
// they could not send their schedule, their own sockets dropped, or their
// core was saturated.
func (s *step) genLimited() bool {
	return s.a.Sent < s.a.Planned || s.b.Sent < s.b.Planned ||
		s.a.SinkDrops+s.b.SinkDrops > 0 || s.behind > 100*time.Millisecond ||
		s.genCoreSec > 0.95*s.window
}

func (s *step) cpuPerPacket(sec float64) time.Duration {
	if s.received == 0 {
		return 0
	}
	return time.Duration(sec / float64(s.received) * 1e9)
}

func (s *step) String() string {
	return fmt.Sprintf("%5d ch %4dB %7.0f pps  loss %.4f%%  p50 %6.1fµs p99 %8.1fµs  cores %.2f+%.2fs proc %.2fs foreign %.2fs  rss %d kB  behind %v",
		s.channels, s.size, s.pps, s.loss*100, us1(s.p50), us1(s.p99), s.relayCoreSec, s.genCoreSec, s.procSec, s.foreignSec, s.rssKB, s.behind.Round(time.Microsecond)) +
		fmt.Sprintf("  drops: relay rcvbuf %d gen rcvbuf %d backlog %d", s.relayRcvbuf, s.genRcvbuf, s.backlog)
}

// run does one measurement: start the contender with s.channels channels,
// one rtpload per side, sample CPU over the sending window, stop it all.
func (e *env) run(ctx context.Context, t testing.TB, c *contender, s spec) (*step, error) {
	r, err := c.start(ctx, t, e, s.channels)
	if err != nil {
		return nil, err
	}
	res, err := e.drive(ctx, r, s)
	relayed, dropped, counted, serr := r.stop()
	if err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	res.relayed, res.dropped, res.counted = relayed, dropped, counted
	res.relayFinal = r.final
	res.allocPerSec = r.allocPerSec
	return res, nil
}

// drive runs the two generators against a ready relay.
func (e *env) drive(ctx context.Context, r *relay, s spec) (*step, error) {
	ta := filepath.Join(e.dir, "targets-a")
	tb := filepath.Join(e.dir, "targets-b")
	if err := writeTargets(ta, r.targetsA[:s.channels]); err != nil {
		return nil, err
	}
	// Both sides prime every flow at start-up and five times more in the
	// 250 ms before the start, and the relay must have processed the
	// primes by then: allow
	// time in proportion to the flows (and to TURN set-up).
	lead := 800*time.Millisecond + time.Duration(s.channels)*100*time.Microsecond + s.lead
	if r.turn {
		lead += time.Second + time.Duration(s.channels)*time.Millisecond
	}
	start := time.Now().Add(lead)
	drain := 500 * time.Millisecond
	common := []string{"-flows", strconv.Itoa(s.channels), "-size", strconv.Itoa(s.size),
		"-duration", s.duration.String(), "-start-at", strconv.FormatInt(start.UnixNano(), 10),
		"-drain", drain.String()}
	if s.verify {
		common = append(common, "-verify-payload")
	}
	argsA := append([]string{"-side", "a", "-src", srcA, "-port-base", strconv.Itoa(portBaseA), "-targets", ta,
		"-rate", ftoa(s.rateA), "-peer-rate", ftoa(s.rateB)}, common...)
	argsB := append([]string{"-side", "b", "-src", srcB, "-port-base", strconv.Itoa(portBaseB), "-targets", tb,
		"-rate", ftoa(s.rateB), "-peer-rate", ftoa(s.rateA)}, common...)
	relayed := filepath.Join(e.dir, "turn-relayed")
	if r.turn {
		peers := filepath.Join(e.dir, "turn-peers")
		var eps []netip.AddrPort
		for i := range s.channels {
			eps = append(eps, endpoint(srcB, portBaseB, i))
		}
		if err := writeTargets(peers, eps); err != nil {
			return nil, err
		}
		argsA = append(argsA, "-turn", "-turn-peers", peers, "-turn-relayed", relayed)
		if r.turnUser != "" {
			argsA = append(argsA, "-turn-user", r.turnUser, "-turn-password", r.turnPassword)
		}
	} else if err := writeTargets(tb, r.targetsB[:s.channels]); err != nil {
		return nil, err
	}
	pa, err := startProc(ctx, genCore, e.topo.nsA, nil, e.rtpload, argsA...)
	if err != nil {
		return nil, err
	}
	if r.turn {
		// Side b sends to the relayed addresses side a was given.
		if _, err := pa.line("turn-ready", lead); err != nil {
			_, _ = pa.stop(5 * time.Second)
			return nil, err
		}
		data, err := os.ReadFile(relayed)
		if err == nil {
			err = os.WriteFile(tb, data, 0o644)
		}
		if err != nil {
			_, _ = pa.stop(5 * time.Second)
			return nil, err
		}
	}
	pb, err := startProc(ctx, genCore, e.topo.nsB, nil, e.rtpload, argsB...)
	if err != nil {
		_, _ = pa.stop(5 * time.Second)
		return nil, err
	}

	pid := 0
	if r.proc != nil {
		pid = r.proc.pid()
	}
	d0 := e.drops()
	time.Sleep(time.Until(start))
	ours := map[int]bool{os.Getpid(): true, pa.pid(): true, pb.pid(): true, pid: true}
	known := func() float64 {
		return harness.ProcCPU(pid) + harness.ProcCPU(pa.pid()) + harness.ProcCPU(pb.pid()) + harness.ProcCPU(os.Getpid()) + kthreadCPU()
	}
	c0, p0, o0, k0 := readCPU(), harness.ProcCPU(pid), otherCPU(ours), known()
	t0 := time.Now()
	time.Sleep(s.duration)
	c1, p1, o1, k1 := readCPU(), harness.ProcCPU(pid), otherCPU(ours), known()
	window := time.Since(t0).Seconds()
	rss, hwm := harness.ProcMem(pid)

	limit := lead + s.duration + drain + 30*time.Second
	outA, errA := pa.wait(limit)
	outB, errB := pb.wait(limit)
	if err := errors.Join(errA, errB); err != nil {
		return nil, err
	}
	st := &step{spec: s, window: window, rssKB: rss, hwmKB: hwm}
	d1 := e.drops()
	st.relayRcvbuf, st.genRcvbuf, st.backlog = d1[0]-d0[0], d1[1]-d0[1], d1[2]-d0[2]
	if err := lastJSON(outA, &st.a); err != nil {
		return nil, fmt.Errorf("side a: %w", err)
	}
	if err := lastJSON(outB, &st.b); err != nil {
		return nil, fmt.Errorf("side b: %w", err)
	}
	st.sent = st.a.Sent + st.b.Sent
	st.received = st.a.Received + st.b.Received
	st.lost = int64(st.sent) - int64(st.received)
	if st.sent > 0 {
		st.loss = float64(st.lost) / float64(st.sent)
	}
	var h load.Histogram
	h.AddSparse(st.a.LatencyHist)
	h.AddSparse(st.b.LatencyHist)
	st.p50, st.p99, st.max = time.Duration(h.Quantile(0.5)), time.Duration(h.Quantile(0.99)), time.Duration(h.Max())
	st.pps = float64(st.received) / s.duration.Seconds()
	st.behind = time.Duration(max(st.a.SendBehind, st.b.SendBehind))
	st.procSec = p1 - p0
	st.relayCoreSec, st.genCoreSec, st.systemSec = busy(c0, c1)
	// Other processes' time counts their reaped children, which can
	// include time from before the window; it cannot exceed what the
	// cores did beyond our own processes, though.
	st.foreignSec = min(otherDelta(o0, o1), st.systemSec-(k1-k0))
	return st, nil
}

func us1(d time.Duration) float64 { return float64(d) / 1e3 }

// drops reads the kernel's drop counters: UDP RcvbufErrors in the relay
// namespace, the same summed over both generator namespaces, and the
// backlog drops of all cores (/proc/net/softnet_stat is not per namespace).
func (e *env) drops() [3]uint64 {
	var d [3]uint64
	d[0] = udpRcvbufErrors(e.topo.nsR)
	d[1] = udpRcvbufErrors(e.topo.nsA) + udpRcvbufErrors(e.topo.nsB)
	data, _ := os.ReadFile("/proc/net/softnet_stat")
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			v, _ := strconv.ParseUint(f[1], 16, 64)
			d[2] += v
		}
	}
	return d
}

func udpRcvbufErrors(ns string) uint64 {
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/net/snmp").Output()
	if err != nil {
		return 0
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseUint(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func writeTargets(path string, ts []netip.AddrPort) error {
	var b strings.Builder
	for _, a := range ts {
		b.WriteString(a.String())
		b.WriteByte('\n')
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// lastJSON decodes the last non-empty line of out into v.
func lastJSON(out []string, v any) error {
	for i := len(out) - 1; i >= 0; i-- {
		if strings.TrimSpace(out[i]) != "" {
			return json.Unmarshal([]byte(out[i]), v)
		}
	}
	return errors.New("no result printed")
}

// cpuTimes are seconds from /proc/stat.
//
// Only idle time is used from there: this kernel (tick-based accounting,
// no IRQ time accounting) samples user, system and softirq time at the
// scheduler tick, and a relay that wakes for a few µs per packet and
// sleeps again is mostly missed (a third less than its real run time,
// measured here), while idle periods are measured exactly by the tickless
// idle code. So a core's busy time is wall time − idle, exactly, including
// the kernel's packet processing on it. A process's own user+system time
// in /proc/PID/stat adds up its exact run time (softirq work done inside
// its system calls included).
type cpuTimes struct {
	at                 time.Time
	idle0, idle1, idle float64 // idle + iowait: relay core, generator core, all
}

const clkTck = 100 // USER_HZ, the unit of /proc/stat and /proc/PID/stat on Linux

func readCPU() cpuTimes {
	ct := cpuTimes{at: time.Now()}
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return ct
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		a, _ := strconv.ParseFloat(f[4], 64)
		b, _ := strconv.ParseFloat(f[5], 64)
		idle := (a + b) / clkTck
		switch f[0] {
		case "cpu":
			ct.idle = idle
		case "cpu" + relayCore:
			ct.idle0 = idle
		case "cpu" + genCore:
			ct.idle1 = idle
		}
	}
	return ct
}

// busy returns the busy seconds of the relay core, the generator core and
// all cores between c0 and c1.
func busy(c0, c1 cpuTimes) (relay, gen, all float64) {
	wall := c1.at.Sub(c0.at).Seconds()
	return wall - (c1.idle0 - c0.idle0), wall - (c1.idle1 - c0.idle1),
		wall*float64(runtime.NumCPU()) - (c1.idle - c0.idle)
}

// otherCPU snapshots the CPU time of every process that is neither in
// ours nor a kernel thread: its own user+system time plus that of its
// children it already reaped (so short-lived processes, like a compiler
// run by another build, count through their parent).
func otherCPU(ours map[int]bool) map[int]float64 {
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	out := make(map[int]float64, len(dirs))
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		if err != nil || ours[pid] {
			continue
		}
		data, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		s := string(data)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		// f[1] is the parent: kernel threads are kthreadd (2) and its
		// children; their packet work (ksoftirqd) is ours.
		if len(f) < 15 || f[1] == "2" || f[1] == "0" && pid == 2 {
			continue
		}
		var sum float64
		for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
			v, _ := strconv.ParseFloat(f[i], 64)
			sum += v
		}
		out[pid] = sum / clkTck
	}
	return out
}

// kthreadCPU is the run time of all kernel threads (ksoftirqd does part of
// the packet processing).
func kthreadCPU() float64 {
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	var sum float64
	for _, d := range dirs {
		data, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		s := string(data)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 || f[1] != "2" {
			continue
		}
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		sum += (ut + st) / clkTck
	}
	return sum
}

// otherDelta is the CPU time other processes used between two snapshots;
// processes that ended in between are left out (their reaped time shows in
// their parent).
func otherDelta(a, b map[int]float64) float64 {
	var sum float64
	for pid, v := range b {
		sum += v - a[pid]
	}
	return sum
}
