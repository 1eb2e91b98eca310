// Package fastpathtest is the network both fast paths' tests run in
// (kernel/nft, kernel/tcfwd): the kernel forwards in whatever namespace
// the fast path is opened in, so each test builds its own. New builds a
// relay between its two peers:
//
//	ns A (192.0.2.2/24) ── (192.0.2.1/24 ra) ns R (rb 198.51.100.1/24) ── (198.51.100.2/24) ns B
//
// R is the relay with forwarding on; A and B are the two peers and route
// everything through R. NewOneArm builds what a donor's relay is: one
// interface, both peers beyond a router G, so every relayed datagram
// leaves by the interface it came in on, toward G's MAC address:
//
//	ns A ── (192.0.2.1) ns G (198.51.100.1) ── ns B
//	                    (203.0.113.1 gr)
//	                         │
//	                    ns R (203.0.113.2/24 eth0)
//
// The links' MTU is 1600, so that the largest
// payload a fast path takes (1500 bytes) and the next larger one cross
// unfragmented. The peers compute their checksums in software (transmit
// checksum offload off), so B's and A's kernels verify what a fast path
// rewrote. TEST-NET addresses only, nothing leaves the namespaces.
package fastpathtest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel/internal/ebpf"
)

// The addresses of the topology.
var (
	RelayA = netip.MustParseAddr("192.0.2.1")
	PeerA  = netip.MustParseAddr("192.0.2.2")
	RelayB = netip.MustParseAddr("198.51.100.1")
	PeerB  = netip.MustParseAddr("198.51.100.2")
	// OneArmRelay is R's only address in NewOneArm's network; G is
	// RelayA, RelayB and OneArmGateway there.
	OneArmRelay   = netip.MustParseAddr("203.0.113.2")
	OneArmGateway = netip.MustParseAddr("203.0.113.1")
)

// Topo names the namespaces; G is "" but in NewOneArm's network, B "" in
// NewL3's.
type Topo struct{ A, R, B, G string }

// New builds the two-armed network (removed at cleanup); prefix names
// it. It skips the test when not root.
func New(t *testing.T, prefix string) *Topo {
	t.Helper()
	tp := namespaces(t, prefix, "arb")
	peers(t, tp.R, tp.A, tp.B)
	tp.Forwarding(t, true)
	return tp
}

// NewOneArm builds the one-armed network (see the package comment).
func NewOneArm(t *testing.T, prefix string) *Topo {
	t.Helper()
	tp := namespaces(t, prefix, "argb")
	peers(t, tp.G, tp.A, tp.B)
	Run(t, "ip", "-n", tp.G, "link", "add", "gr", "type", "veth", "peer", "name", "eth0", "netns", tp.R)
	for _, s := range [][]string{
		{"-n", tp.G, "addr", "add", OneArmGateway.String() + "/24", "dev", "gr"},
		{"-n", tp.R, "addr", "add", OneArmRelay.String() + "/24", "dev", "eth0"},
		{"-n", tp.G, "link", "set", "gr", "mtu", "1600", "up"}, {"-n", tp.R, "link", "set", "eth0", "mtu", "1600", "up"},
		{"-n", tp.R, "route", "add", "default", "via", OneArmGateway.String()},
	} {
		Run(t, append([]string{"ip"}, s...)...)
	}
	Run(t, "ip", "netns", "exec", tp.G, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	tp.Forwarding(t, true)
	return tp
}

// NewOneArmBridged is NewOneArm where R's uplink is a bridge (br0,
// holding OneArmRelay) whose one port is the link to G, as on a
// virtualisation or container host: both peers are reached through the
// same bridge port, toward G's MAC address. brNetfilter sets
// net.bridge.bridge-nf-call-iptables in R (br_netfilter passing bridged
// IPv4 frames through the IPv4 hooks); the test is skipped when the
// br_netfilter module is not loaded and brNetfilter is true.
func NewOneArmBridged(t *testing.T, prefix string, brNetfilter bool) *Topo {
	t.Helper()
	tp := NewOneArm(t, prefix)
	for _, s := range [][]string{
		{"-n", tp.R, "addr", "del", OneArmRelay.String() + "/24", "dev", "eth0"},
		{"-n", tp.R, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		{"-n", tp.R, "link", "set", "br0", "mtu", "1600"},
		{"-n", tp.R, "link", "set", "eth0", "master", "br0"},
		{"-n", tp.R, "addr", "add", OneArmRelay.String() + "/24", "dev", "br0"},
		{"-n", tp.R, "link", "set", "br0", "up"},
		{"-n", tp.R, "route", "add", "default", "via", OneArmGateway.String()},
	} {
		Run(t, append([]string{"ip"}, s...)...)
	}
	SetBrNetfilter(t, tp.R, brNetfilter)
	return tp
}

// SetBrNetfilter sets net.bridge.bridge-nf-call-iptables in ns (the
// sysctl is per network namespace). Without the br_netfilter module
// there is nothing to turn off; turning it on skips the test.
func SetBrNetfilter(t *testing.T, ns string, on bool) {
	t.Helper()
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err != nil {
		if on {
			t.Skip("skipping: br_netfilter is not loaded")
		}
		return
	}
	v := "0"
	if on {
		v = "1"
	}
	Run(t, "ip", "netns", "exec", ns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables="+v)
}

// NewOneArmNAPI is NewOneArm where R's interface receives through NAPI
// and GRO, as from a network card (a veth does so only with GRO on):
// datagrams that reach R together go through prerouting as one list,
// before any of them is forwarded. (Whether two peers' datagrams do reach
// it together is up to the scheduler: the test cannot force it.)
func NewOneArmNAPI(t *testing.T, prefix string) *Topo {
	t.Helper()
	tp := NewOneArm(t, prefix)
	Run(t, "ip", "netns", "exec", tp.R, "ethtool", "-K", "eth0", "gro", "on")
	return tp
}

// NewL3 builds the network of a router whose uplink is an L3 device
// (PPPoE's ppp0, WireGuard): R has A on its LAN (ra, RelayA) and the tun
// device tun0, holding OneArmRelay/32 and the default route. What lies
// beyond tun0 — the Internet and its peers — is the test, through the
// returned Tun.
func NewL3(t *testing.T, prefix string) (*Topo, *Tun) {
	t.Helper()
	tp := namespaces(t, prefix, "ar")
	tun := NewTun(t, tp.R, "tun0")
	Run(t, "ip", "-n", tp.R, "link", "add", "ra", "type", "veth", "peer", "name", "eth0", "netns", tp.A)
	for _, s := range [][]string{
		{"-n", tp.R, "addr", "add", RelayA.String() + "/24", "dev", "ra"},
		{"-n", tp.A, "addr", "add", PeerA.String() + "/24", "dev", "eth0"},
		{"-n", tp.R, "link", "set", "ra", "up"}, {"-n", tp.A, "link", "set", "eth0", "up"},
		{"-n", tp.A, "route", "add", "default", "via", RelayA.String()},
		{"-n", tp.R, "addr", "add", OneArmRelay.String() + "/32", "dev", "tun0"},
		{"-n", tp.R, "link", "set", "tun0", "up"},
		{"-n", tp.R, "route", "add", "default", "dev", "tun0"},
	} {
		Run(t, append([]string{"ip"}, s...)...)
	}
	Run(t, "ip", "netns", "exec", tp.A, "ethtool", "-K", "eth0", "tx", "off")
	tp.Forwarding(t, true)
	return tp, tun
}

// namespaces adds the namespaces named by roles ('a', 'r', 'b', 'g':
// Topo's fields), each removed at cleanup.
func namespaces(t *testing.T, prefix, roles string) *Topo {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (network namespaces)")
	}
	if os.Getenv("JNRELAY_QEMU_USER") == "1" {
		t.Skip("skipping under qemu-user: building the namespaces forks ip(8), and a forking Go program can hang there")
	}
	id := fmt.Sprintf("%s-%x%04x", prefix, os.Getpid(), rand.Uint32N(1<<16))
	tp := &Topo{}
	for _, role := range roles {
		ns := id + "-" + string(role)
		switch role {
		case 'a':
			tp.A = ns
		case 'r':
			tp.R = ns
		case 'b':
			tp.B = ns
		case 'g':
			tp.G = ns
		}
		Run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		Run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	return tp
}

// peers links A and B to the router ns (as ra and rb, holding RelayA
// and RelayB) and routes them through it. The peers compute their
// checksums in software.
func peers(t *testing.T, router, a, b string) {
	t.Helper()
	Run(t, "ip", "-n", router, "link", "add", "ra", "type", "veth", "peer", "name", "eth0", "netns", a)
	Run(t, "ip", "-n", router, "link", "add", "rb", "type", "veth", "peer", "name", "eth0", "netns", b)
	for _, s := range [][]string{
		{"-n", router, "addr", "add", RelayA.String() + "/24", "dev", "ra"},
		{"-n", router, "addr", "add", RelayB.String() + "/24", "dev", "rb"},
		{"-n", a, "addr", "add", PeerA.String() + "/24", "dev", "eth0"},
		{"-n", b, "addr", "add", PeerB.String() + "/24", "dev", "eth0"},
		{"-n", router, "link", "set", "ra", "mtu", "1600", "up"}, {"-n", router, "link", "set", "rb", "mtu", "1600", "up"},
		{"-n", a, "link", "set", "eth0", "mtu", "1600", "up"}, {"-n", b, "link", "set", "eth0", "mtu", "1600", "up"},
		{"-n", a, "route", "add", "default", "via", RelayA.String()},
		{"-n", b, "route", "add", "default", "via", RelayB.String()},
	} {
		Run(t, append([]string{"ip"}, s...)...)
	}
	for _, ns := range []string{a, b} {
		Run(t, "ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off")
	}
}

// Forwarding sets net.ipv4.ip_forward in R.
func (tp *Topo) Forwarding(t *testing.T, on bool) {
	t.Helper()
	v := "0"
	if on {
		v = "1"
	}
	Run(t, "ip", "netns", "exec", tp.R, "sysctl", "-qw", "net.ipv4.ip_forward="+v)
}

// SkipWithoutBPF and SkipWithoutNetfilter skip the test under qemu-user
// (make test-cross sets JNRELAY_QEMU_USER=1), which emulates neither
// bpf(2) nor NETLINK_NETFILTER sockets, so no fast path opens there. They
// are called before New: building the namespaces is some twenty
// fork/execs, and a Go program forking under qemu-user now and then hangs
// in it (a test did, ten minutes, in CI). Natively they do nothing: there
// the fast path's own error fails the test.
func SkipWithoutBPF(t *testing.T) {
	t.Helper()
	skipUnemulated(t, "bpf(2)", func() error {
		fd, err := ebpf.MapCreate(unix.BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	})
}

// SkipWithoutNetfilter: see SkipWithoutBPF.
func SkipWithoutNetfilter(t *testing.T) {
	t.Helper()
	skipUnemulated(t, "NETLINK_NETFILTER socket", func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err == nil {
			unix.Close(fd)
		}
		return err
	})
}

func skipUnemulated(t *testing.T, what string, probe func() error) {
	t.Helper()
	if os.Getenv("JNRELAY_QEMU_USER") != "1" {
		return
	}
	if err := probe(); err != nil {
		t.Skipf("%s: %v: qemu-user does not emulate it", what, err)
	}
}

// Run runs a command and fails the test with its output on error.
func Run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// In runs fn on a thread inside namespace ns; sockets and netlink
// connections fn opens stay in ns and are usable from any goroutine.
func In(t *testing.T, ns string, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// UDP opens a UDP socket bound to ap in namespace ns, closed at cleanup.
func UDP(t *testing.T, ns string, ap netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	In(t, ns, func() (err error) { c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap)); return err })
	t.Cleanup(func() { c.Close() })
	return c
}

// Addr is c's bound address.
func Addr(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// Expect reads one datagram on c and checks its payload and source.
func Expect(t *testing.T, c *net.UDPConn, payload []byte, from netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, src, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("%s: no datagram (want %d bytes from %s): %v", c.LocalAddr(), len(payload), from, err)
	}
	if string(buf[:n]) != string(payload) || src != from {
		t.Fatalf("%s: got %d bytes from %s, want %d from %s", c.LocalAddr(), n, src, len(payload), from)
	}
}

// noneWait is how long ExpectNone listens: the sender's datagram
// crossed two veths; a short wait covers the softirq on the other core.
const noneWait = 200 * time.Millisecond

// ExpectNone checks that nothing is waiting on c.
func ExpectNone(t *testing.T, c *net.UDPConn) {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(noneWait))
	if n, src, err := c.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("%s: unexpected %d bytes from %s", c.LocalAddr(), n, src)
	}
}

// Send sends payload from c to to.
func Send(t *testing.T, c *net.UDPConn, payload []byte, to netip.AddrPort) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(payload, to); err != nil {
		t.Fatal(err)
	}
}
