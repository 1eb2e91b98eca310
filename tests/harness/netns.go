package harness

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Interface names used inside the namespaces of a LAN. They are per
// namespace, so they never collide between LANs.
const (
	bridgeIf = "br0"  // bridge in the hub namespace
	hostIf   = "eth0" // veth end in every other host namespace
)

// netnsDir is where iproute2 keeps named network namespaces.
const netnsDir = "/var/run/netns"

// RequireRoot skips the test unless it runs as root (network namespaces and
// private XMPP servers need it).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (network namespaces, private XMPP servers); run `sudo go test ./tests/...`")
	}
}

// LAN is a star topology of network namespaces: the first host (the hub,
// typically "relay") owns a bridge with address 203.0.113.1/24, and every
// other host i (1-based position i+1 in the host list) has a veth "eth0"
// plugged into that bridge with address 203.0.113.(1+i)/24. Loopback is up in
// every namespace. A LAN is removed by the t.Cleanup registered in NewLAN.
type LAN struct {
	hosts []string
	ns    map[string]string
	addrs map[string]netip.Addr
}

// NewLAN builds a LAN with one namespace per host, named
// "<prefix>-<unique id>-<host>" so parallel tests and runs never collide.
// It fails the test on error and skips it when not root.
func NewLAN(t testing.TB, prefix string, hosts ...string) *LAN {
	t.Helper()
	RequireRoot(t)
	if len(hosts) == 0 || len(hosts) > 250 {
		t.Fatalf("NewLAN: need 1..250 hosts, got %d", len(hosts))
	}
	id := fmt.Sprintf("%x%04x", os.Getpid(), rand.Uint32N(1<<16))
	l := &LAN{ns: map[string]string{}, addrs: map[string]netip.Addr{}}
	t.Cleanup(func() {
		for _, err := range l.destroy() {
			t.Error(err)
		}
	})
	for i, h := range hosts {
		if _, dup := l.ns[h]; dup || h == "" {
			t.Fatalf("NewLAN: invalid or duplicate host name %q", h)
		}
		ns := prefix + "-" + id + "-" + h
		if err := ipCmd("netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		l.hosts = append(l.hosts, h)
		l.ns[h] = ns
		l.addrs[h] = netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + i)})
		if err := ipCmd("-n", ns, "link", "set", "lo", "up"); err != nil {
			t.Fatal(err)
		}
	}
	hub := l.ns[hosts[0]]
	steps := [][]string{
		{"-n", hub, "link", "add", bridgeIf, "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		{"-n", hub, "link", "set", bridgeIf, "addrgenmode", "none"},
		{"-n", hub, "addr", "add", l.addrs[hosts[0]].String() + "/24", "dev", bridgeIf},
		{"-n", hub, "link", "set", bridgeIf, "up"},
	}
	// No IPv6 link-local addresses: the kernel would add them when a
	// carrier comes up and finish their duplicate-address detection
	// about a second later, address events that arrive after NewLAN
	// returned. Chromium drops its connections on such an event
	// (ERR_NETWORK_CHANGED); the tests address everything over IPv4.
	for i, h := range hosts[1:] {
		port := "v" + strconv.Itoa(i+1)
		steps = append(steps,
			[]string{"-n", hub, "link", "add", port, "type", "veth", "peer", "name", hostIf, "netns", l.ns[h]},
			[]string{"-n", hub, "link", "set", port, "addrgenmode", "none"},
			[]string{"-n", l.ns[h], "link", "set", hostIf, "addrgenmode", "none"},
			[]string{"-n", hub, "link", "set", port, "master", bridgeIf, "up"},
			[]string{"-n", l.ns[h], "addr", "add", l.addrs[h].String() + "/24", "dev", hostIf},
			[]string{"-n", l.ns[h], "link", "set", hostIf, "up"},
		)
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// destroy kills processes left in the namespaces (reporting them as
// errors) and deletes the namespaces.
func (l *LAN) destroy() []error {
	var errs []error
	for _, h := range l.hosts {
		ns := l.ns[h]
		out, err := exec.Command("ip", "netns", "pids", ns).Output()
		if err != nil {
			errs = append(errs, fmt.Errorf("ip netns pids %s: %w", ns, err))
		}
		for _, f := range strings.Fields(string(out)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				continue
			}
			errs = append(errs, fmt.Errorf("process %d leaked in namespace %s; killing it", pid, ns))
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				errs = append(errs, fmt.Errorf("kill %d: %w", pid, err))
			}
		}
		if err := ipCmd("netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Hosts returns the host names, hub first.
func (l *LAN) Hosts() []string { return append([]string(nil), l.hosts...) }

// Hub returns the name of the hub host (the first host).
func (l *LAN) Hub() string { return l.hosts[0] }

// Addr returns the LAN address of host (203.0.113.x). It panics for an
// unknown host, which is a bug in the test.
func (l *LAN) Addr(host string) netip.Addr {
	l.mustHave(host)
	return l.addrs[host]
}

// NS returns the namespace name of host, for `ip netns exec` or
// ServerOptions.Netns / Requester.Netns.
func (l *LAN) NS(host string) string {
	l.mustHave(host)
	return l.ns[host]
}

func (l *LAN) mustHave(host string) {
	if _, ok := l.ns[host]; !ok {
		panic(fmt.Sprintf("harness: unknown LAN host %q", host))
	}
}

// Command returns a command that runs name inside the namespace of host
// (`ip netns exec`, which execs, so the command's PID is the program's).
func (l *LAN) Command(ctx context.Context, host, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.NS(host), name}, args...)...)
}

// ListenUDP opens a UDP socket bound to addr inside the namespace of host.
// The socket is usable from any goroutine of the test process.
func (l *LAN) ListenUDP(host string, addr netip.AddrPort) (*net.UDPConn, error) {
	return ListenUDPIn(l.NS(host), addr)
}

// LinkDown sets the LAN link of host down: the veth of a leaf host, or the
// bridge of the hub (cutting the hub off from everyone).
func (l *LAN) LinkDown(host string) error { return l.setLink(host, "down") }

// LinkUp undoes LinkDown. Carrier comes back asynchronously, so a test
// should await traffic rather than assume it flows immediately.
func (l *LAN) LinkUp(host string) error { return l.setLink(host, "up") }

func (l *LAN) setLink(host, state string) error {
	dev := hostIf
	if host == l.Hub() {
		dev = bridgeIf
	}
	return ipCmd("-n", l.NS(host), "link", "set", dev, state)
}

// ipCmd runs `ip args...` and wraps its output into the error.
func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// RunInNetns runs fn on an OS thread that has joined the named network
// namespace (as created by `ip netns add`), so sockets fn creates live in
// that namespace. fn must not start goroutines that create sockets. fn runs
// on a dedicated goroutine; if the thread cannot return to its original
// namespace it is left locked and therefore destroyed when that goroutine
// exits, so no other code ever runs in the wrong namespace.
func RunInNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join(netnsDir, name))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %q: %w", name, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %q: %w", name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the tainted thread dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("restore netns after %q: %w", name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// ListenUDPIn opens a UDP socket bound to addr inside network namespace ns
// ("" = the test process's own namespace).
func ListenUDPIn(ns string, addr netip.AddrPort) (*net.UDPConn, error) {
	var conn *net.UDPConn
	err := inNetns(ns, func() (err error) {
		conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen udp %s in netns %q: %w", addr, ns, err)
	}
	return conn, nil
}

// inNetns is RunInNetns that runs fn directly when ns is "".
func inNetns(ns string, fn func() error) error {
	if ns == "" {
		return fn()
	}
	return RunInNetns(ns, fn)
}
