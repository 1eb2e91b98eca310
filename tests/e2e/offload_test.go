package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// unprivilegedUID is the user relayd runs as beside the broker (nobody).
const unprivilegedUID = 65534

// TestOffloadBroker is the fast path by privilege separation: relayd
// runs as an unprivileged user with no capability at all (checked in
// /proc), the offload broker (relayd -offload-broker) as root holds the
// eBPF program or the nftables table, and the call's media is forwarded
// by the kernel — the
// counters relayd reads through the broker say so, exactly as in
// TestRelay's ebpf runs. Killing relayd takes the program out with it:
// the broker removes the table of a client that leaves. Killing the
// broker mid-call returns the call to userspace, where it goes on.
func TestOffloadBroker(t *testing.T) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jno", "relay", "caller", "callee", "evil")
	srv := startServer(ctx, t, "prosody", lan.NS("relay"), map[string]string{user: password})
	dir := reachableDir(t)
	bin := filepath.Join(dir, "relayd")
	if err := copyFile(relaydBin, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "offload.sock")
	for _, mode := range []string{"ebpf", "nftables"} {
		t.Run(mode, func(t *testing.T) {
			w := &world{lan: lan, srv: srv, req: srv.Requester(user, password), fastPath: mode,
				broker: startBroker(ctx, t, lan.NS("relay"), bin, socket), brokerBin: bin}
			w.forwarding(t, true)
			defer w.forwarding(t, false)
			t.Run("call", w.testCall)
			t.Run("errors-and-expiry", w.testErrorsAndExpiry)
			if mode == "nftables" {
				// The table outlives a killed broker (until the next
				// one replaces it): the eBPF runs below are about
				// the program going with its holder.
				return
			}
			t.Run("sigkill-detaches", w.testKilledForwarder)
			t.Run("broker-killed-mid-call", func(t *testing.T) { w.testBrokerKilled(ctx, t, bin, socket) })
		})
	}
}

// testBrokerKilled kills the broker (SIGKILL) in the middle of an
// offloaded call: its program goes with its descriptors, relayd notices
// at its next counter read, takes every leg back to userspace, and the
// call goes on there. A new broker gets the call's legs back into the
// kernel.
func (w *world) testBrokerKilled(ctx context.Context, t *testing.T, bin, socket string) {
	_, rd, c := w.offloadedCall(t)
	w.broker.kill(t)
	if _, err := rd.WaitLog(ctx, "in-kernel fast path lost with the offload broker: every leg is relayed in userspace", 1, nil); err != nil {
		t.Fatal(err)
	}
	c.exchange(ctx, t, 50)
	w.broker = startBroker(ctx, t, w.lan.NS("relay"), bin, socket)
	if _, err := rd.WaitLog(ctx, "in-kernel fast path back through the offload broker", 1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.WaitLog(ctx, "leg offloaded", 4, func(r harness.LogRecord) bool { return r.Str("channel") == c.id }); err != nil {
		t.Fatalf("legs of %s not offloaded again: %v", c.id, err)
	}
	c.exchange(ctx, t, 50)
	c.checkClean(t)
	if strings.Contains(w.broker.out.String(), "refused") {
		t.Errorf("the broker refused something of a well-behaved relayd:\n%s", w.broker.out.String())
	}
	// What the kernel forwarded since relayd's last read of its counters
	// died with the first broker; the second's are read at the end.
	end := channelEnd(ctx, t, rd, c.id)
	kernel := end.Int("kernel_packets_local_to_remote")
	if user := end.Int("packets_local_to_remote") - kernel; user < 2*50 || kernel < 2*50 {
		t.Errorf("want the media sent without a broker (%d) in userspace and the last (%d) through the new broker's kernel table: %v", 2*50, 2*50, end)
	}
}

// brokerProc is a running offload broker and its output.
type brokerProc struct {
	socket string
	cmd    *exec.Cmd
	exited chan struct{}
	out    harness.SyncBuffer
	mu     sync.Mutex
	lines  []string
	grew   chan struct{} // closed and replaced when a line arrives
}

// startBroker runs bin -offload-broker socket as root in ns, serving
// unprivilegedUID, until the test ends; it returns once it listens.
func startBroker(ctx context.Context, t *testing.T, ns, bin, socket string) *brokerProc {
	t.Helper()
	b := &brokerProc{socket: socket, grew: make(chan struct{}), exited: make(chan struct{})}
	cmd := exec.Command("ip", "netns", "exec", ns, bin, "-offload-broker", socket, "-offload-user", fmt.Sprint(unprivilegedUID))
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Forked from a locked thread that lives until the broker is reaped:
	// the parent-death signal follows the forking thread, and Go ends
	// threads whose goroutine exits locked (as netns code does).
	started, exited := make(chan error, 1), b.exited
	b.cmd = cmd
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		pw.Close()
		close(exited)
	}()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	go b.collect(pr)
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second): // an upper bound
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("offload broker output:\n%s", b.out.String())
		}
	})
	if err := b.wait(ctx, "offload broker listening", 1); err != nil {
		t.Fatal(err)
	}
	return b
}

// kill ends the broker with SIGKILL, as a crash would, and waits for it.
func (b *brokerProc) kill(t *testing.T) {
	t.Helper()
	if err := b.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-b.exited
}

func (b *brokerProc) collect(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(&b.out, line)
		b.mu.Lock()
		b.lines = append(b.lines, line)
		close(b.grew)
		b.grew = make(chan struct{})
		b.mu.Unlock()
	}
}

// wait returns once n lines hold msg.
func (b *brokerProc) wait(ctx context.Context, msg string, n int) error {
	for {
		b.mu.Lock()
		seen := 0
		for _, l := range b.lines {
			if strings.Contains(l, msg) {
				seen++
			}
		}
		grew := b.grew
		b.mu.Unlock()
		if seen >= n {
			return nil
		}
		select {
		case <-grew:
		case <-ctx.Done():
			return fmt.Errorf("offload broker: %d of %d %q: %w\n%s", seen, n, msg, ctx.Err(), b.out.String())
		}
	}
}

// startUnprivileged starts relayd as unprivilegedUID with no capability
// through the broker, checks in /proc that it has none, and waits until
// its fast path is the broker's.
func (w *world) startUnprivileged(ctx context.Context, t *testing.T, cfg config.Config) *harness.Relayd {
	t.Helper()
	cfg.Channel.OffloadSocket = w.broker.socket
	rd := keepRelayd(t)(harness.StartRelaydAs(unprivilegedUID, w.brokerBin, w.lan.NS("relay"), reachableDir(t), cfg))
	rec, err := rd.WaitLog(ctx, "in-kernel fast path on: latched legs are forwarded by the kernel", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if by := rec.Str("by"); !strings.Contains(by, "through the offload broker") {
		t.Fatalf("fast path by %q, want the broker's", by)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", rd.PID()))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"Uid:": fmt.Sprint(unprivilegedUID), "CapPrm:": "0000000000000000", "CapEff:": "0000000000000000",
		"CapBnd:": "0000000000000000", "CapAmb:": "0000000000000000"}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && want[f[0]] != "" {
			if f[1] != want[f[0]] {
				t.Fatalf("relayd %s %s, want %s", f[0], f[1], want[f[0]])
			}
			delete(want, f[0])
		}
	}
	if len(want) != 0 {
		t.Fatalf("/proc status lacks %v", want)
	}
	return rd
}

// reachableDir is a directory removed at cleanup that other users may
// traverse (t.TempDir's parent is root's alone).
func reachableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "jnoffload")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyFile(src, dst string, perm os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, perm)
}
