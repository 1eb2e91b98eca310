package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"syscall"
	"time"
)

// killWait bounds how long a SIGKILLed process may take to be reaped.
const killWait = 10 * time.Second

// process is a child process started and reaped by the harness.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process was reaped
	err  error         // result of Wait; valid after done is closed
}

// netnsCommand returns a command running name in network namespace ns, or
// in the current one when ns is "". `ip netns exec` execs the program, so
// the PID is the program's own.
func netnsCommand(ns, name string, args ...string) *exec.Cmd {
	if ns == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// startProcess starts cmd with stdout and stderr appended to out. The child
// gets SIGKILL if the test process dies, so a crashed test leaks nothing.
// Linux sends that "parent death" signal when the forking *thread* exits,
// and Go destroys threads whose goroutine exits while locked (as netns code
// does on purpose). So the child is forked from a locked thread that stays
// alive, waiting for the child, until the child is reaped.
func startProcess(cmd *exec.Cmd, out io.Writer) (*process, error) {
	cmd.Stdout, cmd.Stderr = out, out
	// A process group of its own, so that stopping it ends the helpers it
	// spawned too (ejabberd's erl_child_setup and inet_gethost outlive
	// the VM by a moment, and a namespace's cleanup would find them).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	p := &process{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("start %s: %w", cmd.Path, err)
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// pid returns the process ID.
func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has terminated and was reaped.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs. It returns once
// the process is reaped (so its PID is really gone).
func (p *process) stop(grace time.Duration) error { return p.stopWith(syscall.SIGTERM, grace) }

// stopWith is stop with another first signal.
func (p *process) stopWith(sig syscall.Signal, grace time.Duration) error {
	if p.exited() {
		return p.endGroup()
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s pid %d: %w", sig, p.pid(), err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.endGroup()
	case <-timer.C:
		return p.kill()
	}
}

// kill sends SIGKILL and waits until the process is reaped.
func (p *process) kill() error {
	if p.exited() {
		return p.endGroup()
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGKILL pid %d: %w", p.pid(), err)
	}
	timer := time.NewTimer(killWait)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.endGroup()
	case <-timer.C:
		return fmt.Errorf("pid %d still alive %v after SIGKILL", p.pid(), killWait)
	}
}

// endGroup SIGKILLs what is left of the process's group once the process
// itself was reaped, and waits until none of it is left. The group keeps
// its ID while a member lives, so the ID cannot name another group.
func (p *process) endGroup() error {
	pgid := p.pid()
	if err := syscall.Kill(-pgid, syscall.SIGKILL); errors.Is(err, syscall.ESRCH) {
		return nil
	}
	deadline := time.Now().Add(killWait)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		time.Sleep(10 * time.Millisecond) // polling: the kernel has no event for a group's end
	}
	return fmt.Errorf("process group %d still alive %v after SIGKILL", pgid, killWait)
}

// freeTCPPorts returns n distinct TCP ports, none of avoid, that are
// currently free on every address inside namespace ns. They are picked at
// random below the kernel's ephemeral range: a port from that range (what
// listening on port 0 gives) is what the next outgoing connection of any
// process — another test package's, in parallel — may take before the
// server that was given it binds it; it happened in CI ("port 45045 busy").
func freeTCPPorts(ns string, n int, avoid ...uint16) ([]uint16, error) {
	first, last := pickablePorts()
	var ports []uint16
	err := inNetns(ns, func() error {
		// All listeners stay open until n distinct ports are found, and
		// they listen on every address, so the ports are free on each.
		var ls []*net.TCPListener
		defer func() {
			for _, l := range ls {
				l.Close()
			}
		}()
		for tries := 0; len(ports) < n; tries++ {
			if tries == 256 {
				return fmt.Errorf("no %d free ports in %d-%d after 256 tries", n, first, last)
			}
			p := uint16(first + rand.IntN(last-first+1))
			if slices.Contains(avoid, p) || slices.Contains(ports, p) {
				continue
			}
			l, err := net.ListenTCP("tcp4", &net.TCPAddr{Port: int(p)})
			if err != nil {
				continue // taken
			}
			ls = append(ls, l)
			ports = append(ports, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pick %d free ports (netns %q): %w", n, ns, err)
	}
	return ports, nil
}

// pickablePorts is the range freeTCPPorts picks from: the 10,000 ports
// below the ephemeral range (/proc/sys/net/ipv4/ip_local_port_range).
func pickablePorts() (first, last int) {
	low := 32768 // Linux's default
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var lo, hi int
		if _, err := fmt.Sscan(string(b), &lo, &hi); err == nil && lo > 11024 {
			low = lo
		}
	}
	return low - 10000, low - 1
}

// checkPortFree returns an error if something already listens on addr in ns.
func checkPortFree(ns string, addr netip.AddrPort) error {
	return inNetns(ns, func() error {
		l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
		if err != nil {
			return fmt.Errorf("port %s busy in netns %q: %w", addr, ns, err)
		}
		return l.Close()
	})
}

// DialTCPIn connects to addr from inside network namespace ns ("" = the
// test process's namespace).
func DialTCPIn(ctx context.Context, ns string, addr netip.AddrPort) (net.Conn, error) {
	var conn net.Conn
	err := inNetns(ns, func() (err error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		conn, err = d.DialContext(ctx, "tcp", addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s in netns %q: %w", addr, ns, err)
	}
	return conn, nil
}

// dialTCP checks that addr accepts a TCP connection inside namespace ns.
func dialTCP(ctx context.Context, ns string, addr netip.AddrPort) error {
	c, err := DialTCPIn(ctx, ns, addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// tailFile returns at most the last n bytes of path, or a note on error.
func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)\n", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(%v)\n", err)
	}
	off := max(st.Size()-n, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return fmt.Sprintf("(%v)\n", err)
	}
	if off > 0 {
		return "...\n" + string(b)
	}
	return string(b)
}
