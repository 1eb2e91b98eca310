//go:build !nofastpath

package nft

import (
	"errors"
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
)

// The tests build their own network, as the fast path runs in the kernel
// of whatever namespace it is opened in:
//
//	ns a (192.0.2.2/24) ── (192.0.2.1/24) ns r (198.51.100.1/24) ── (198.51.100.2/24) ns b
//
// r is the relay with forwarding on; a and b are the two peers and route
// everything through r. TEST-NET addresses only, nothing leaves the
// namespaces. Relay ports are 28000-28003.

var (
	relayA = netip.MustParseAddr("192.0.2.1")
	peerA  = netip.MustParseAddr("192.0.2.2")
	relayB = netip.MustParseAddr("198.51.100.1")
	peerB  = netip.MustParseAddr("198.51.100.2")
)

type topo struct{ a, r, b string }

func newTopo(t *testing.T) *topo {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (network namespaces, nftables)")
	}
	id := fmt.Sprintf("jnnft-%x%04x", os.Getpid(), rand.Uint32N(1<<16))
	tp := &topo{a: id + "-a", r: id + "-r", b: id + "-b"}
	for _, ns := range []string{tp.a, tp.r, tp.b} {
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	}
	ipCmd(t, "-n", tp.r, "link", "add", "ra", "type", "veth", "peer", "name", "eth0", "netns", tp.a)
	ipCmd(t, "-n", tp.r, "link", "add", "rb", "type", "veth", "peer", "name", "eth0", "netns", tp.b)
	for _, s := range [][]string{
		{"-n", tp.r, "addr", "add", relayA.String() + "/24", "dev", "ra"},
		{"-n", tp.r, "addr", "add", relayB.String() + "/24", "dev", "rb"},
		{"-n", tp.a, "addr", "add", peerA.String() + "/24", "dev", "eth0"},
		{"-n", tp.b, "addr", "add", peerB.String() + "/24", "dev", "eth0"},
		{"-n", tp.r, "link", "set", "ra", "up"}, {"-n", tp.r, "link", "set", "rb", "up"},
		{"-n", tp.a, "link", "set", "eth0", "up"}, {"-n", tp.b, "link", "set", "eth0", "up"},
		{"-n", tp.a, "route", "add", "default", "via", relayA.String()},
		{"-n", tp.b, "route", "add", "default", "via", relayB.String()},
	} {
		ipCmd(t, s...)
	}
	tp.forwarding(t, true)
	return tp
}

func (tp *topo) forwarding(t *testing.T, on bool) {
	t.Helper()
	v := "0"
	if on {
		v = "1"
	}
	if out, err := exec.Command("ip", "netns", "exec", tp.r, "sysctl", "-qw", "net.ipv4.ip_forward="+v).CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v: %s", err, out)
	}
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// in runs fn on a thread inside namespace ns; sockets and netlink
// connections fn opens stay in ns and are usable from any goroutine.
func in(t *testing.T, ns string, fn func() error) {
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

func (tp *topo) open(t *testing.T, cfg Config) *Table {
	t.Helper()
	var (
		tb      *Table
		openErr error
	)
	in(t, tp.r, func() error { tb, openErr = Open(cfg); return nil })
	skipIfNoNetfilterNetlink(t, openErr)
	if openErr != nil {
		t.Fatal(openErr)
	}
	t.Cleanup(func() { tb.Close() })
	return tb
}

// skipIfNoNetfilterNetlink skips under qemu-user (make test-cross sets
// JNRELAY_QEMU_USER=1), which opens only a few netlink families and refuses
// NETLINK_NETFILTER with EPROTONOSUPPORT. Natively the same error fails.
func skipIfNoNetfilterNetlink(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, unix.EPROTONOSUPPORT) && os.Getenv("JNRELAY_QEMU_USER") == "1" {
		t.Skipf("%v: qemu-user does not emulate NETLINK_NETFILTER sockets", err)
	}
}

func (tp *topo) udp(t *testing.T, ns string, ap netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	in(t, ns, func() (err error) { c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap)); return err })
	t.Cleanup(func() { c.Close() })
	return c
}

// nftList is `nft list table` in the relay namespace ("" if absent).
func (tp *topo) nftList(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", tp.r, "nft", "list", "table", "ip", name).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No such file") {
			return ""
		}
		t.Fatalf("nft list: %v: %s", err, out)
	}
	return string(out)
}

// expect reads one datagram on c and checks its payload and source.
func expect(t *testing.T, c *net.UDPConn, payload []byte, from netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, src, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("%s: no datagram (want %q from %s): %v", c.LocalAddr(), payload, from, err)
	}
	if string(buf[:n]) != string(payload) || src != from {
		t.Fatalf("%s: got %d bytes from %s, want %q from %s", c.LocalAddr(), n, src, payload, from)
	}
}

// expectNone checks that nothing is waiting on c. The sender's datagram
// crossed two veths; a short wait covers the softirq on the other core.
func expectNone(t *testing.T, c *net.UDPConn) {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, src, err := c.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("%s: unexpected %d bytes from %s", c.LocalAddr(), n, src)
	}
}

func send(t *testing.T, c *net.UDPConn, payload []byte, to netip.AddrPort) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(payload, to); err != nil {
		t.Fatal(err)
	}
}

func TestForwarding(t *testing.T) {
	for _, listen := range []netip.Addr{netip.IPv4Unspecified(), relayA} {
		t.Run("listen="+listen.String(), func(t *testing.T) { testForwarding(t, listen) })
	}
}

func testForwarding(t *testing.T, listen netip.Addr) {
	tp := newTopo(t)
	tb := tp.open(t, Config{Listen: listen})
	// The relay's sockets: what the kernel does not forward arrives here.
	relayP := tp.udp(t, tp.r, netip.AddrPortFrom(netip.IPv4Unspecified(), 28000))
	relayQ := tp.udp(t, tp.r, netip.AddrPortFrom(netip.IPv4Unspecified(), 28002))
	a := tp.udp(t, tp.a, netip.AddrPortFrom(peerA, 5000))
	foreign := tp.udp(t, tp.a, netip.AddrPortFrom(peerA, 5001))
	b := tp.udp(t, tp.b, netip.AddrPortFrom(peerB, 6000))
	// With listen=relayA, B's side is reached at relayA too (one address,
	// as a relay's channel result names one host).
	toP, toQ := netip.AddrPortFrom(relayA, 28000), netip.AddrPortFrom(relayA, 28002)
	leg := Leg{A: Flow{Peer: a.LocalAddr().(*net.UDPAddr).AddrPort(), Port: 28000},
		B:      Flow{Peer: b.LocalAddr().(*net.UDPAddr).AddrPort(), Port: 28002},
		LocalA: relayA, LocalB: relayB}
	if listen.IsUnspecified() {
		toQ = netip.AddrPortFrom(relayB, 28002)
	} else {
		leg.LocalB = relayA
	}

	// Before offload: everything reaches the relay's sockets.
	send(t, a, []byte("before"), toP)
	expect(t, relayP, []byte("before"), leg.A.Peer)

	if err := tb.Apply(nil, []Leg{leg}); err != nil {
		t.Fatal(err)
	}
	send(t, a, []byte("a->b"), toP)
	expect(t, b, []byte("a->b"), netip.AddrPortFrom(leg.LocalB, 28002))
	send(t, b, []byte("b->a!"), toQ)
	expect(t, a, []byte("b->a!"), netip.AddrPortFrom(leg.LocalA, 28000))
	expectNone(t, relayP)
	expectNone(t, relayQ)

	// Another source port of the same host, and an oversize datagram of
	// the latched peer, reach the relay's socket and nobody else.
	send(t, foreign, []byte("intruder"), toP)
	expect(t, relayP, []byte("intruder"), foreign.LocalAddr().(*net.UDPAddr).AddrPort())
	big := make([]byte, MaxPayload+1)
	send(t, a, big, toP)
	expect(t, relayP, big, leg.A.Peer)
	full := make([]byte, MaxPayload)
	send(t, a, full, toP)
	expect(t, b, full, netip.AddrPortFrom(leg.LocalB, 28002))
	expectNone(t, b)

	cs, err := tb.Counters()
	if err != nil {
		t.Fatal(err)
	}
	want := map[Flow]Counter{leg.A: {Packets: 2, Bytes: 4 + MaxPayload}, leg.B: {Packets: 1, Bytes: 5}}
	if len(cs) != 2 || cs[leg.A] != want[leg.A] || cs[leg.B] != want[leg.B] {
		t.Fatalf("counters %v, want %v", cs, want)
	}

	// A replaced leg (the peer on A moved) and a removed one.
	moved := leg
	moved.A.Peer = foreign.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := tb.Apply([]Leg{leg}, []Leg{moved}); err != nil {
		t.Fatal(err)
	}
	send(t, a, []byte("old"), toP)
	expect(t, relayP, []byte("old"), leg.A.Peer)
	send(t, foreign, []byte("new"), toP)
	expect(t, b, []byte("new"), netip.AddrPortFrom(leg.LocalB, 28002))
	send(t, b, []byte("back"), toQ)
	expect(t, foreign, []byte("back"), netip.AddrPortFrom(leg.LocalA, 28000))
	if err := tb.Apply([]Leg{moved}, nil); err != nil {
		t.Fatal(err)
	}
	send(t, foreign, []byte("gone"), toP)
	expect(t, relayP, []byte("gone"), moved.A.Peer)
	if cs, err := tb.Counters(); err != nil || len(cs) != 0 {
		t.Fatalf("counters after removal: %v %v", cs, err)
	}
}

func TestConflictAndInvalid(t *testing.T) {
	tp := newTopo(t)
	tb := tp.open(t, Config{})
	leg := Leg{A: Flow{Peer: netip.AddrPortFrom(peerA, 5000), Port: 28000}, B: Flow{Peer: netip.AddrPortFrom(peerB, 6000), Port: 28002},
		LocalA: relayA, LocalB: relayB}
	if err := tb.Apply(nil, []Leg{leg}); err != nil {
		t.Fatal(err)
	}
	// The same two peer sockets on another channel.
	other := leg
	other.A.Port, other.B.Port = 28004, 28006
	ok := leg
	ok.A.Port, ok.B.Port, ok.A.Peer = 28008, 28010, netip.AddrPortFrom(peerA, 5002)
	if err := tb.Apply(nil, []Leg{ok, other}); !errors.Is(err, ErrConflict) {
		t.Fatalf("conflicting leg: %v, want ErrConflict", err)
	}
	// Nothing of the failed call was installed; ok alone goes in.
	if err := tb.Apply(nil, []Leg{ok}); err != nil {
		t.Fatal(err)
	}
	v6 := leg
	v6.A.Peer = netip.MustParseAddrPort("[2001:db8::1]:5000")
	if err := tb.Apply(nil, []Leg{v6}); err == nil || !strings.Contains(err.Error(), "IPv4 only") {
		t.Fatalf("IPv6 leg: %v", err)
	}
	if err := tb.Apply([]Leg{other}, nil); err == nil {
		t.Fatal("removing a leg that is not installed succeeded")
	}
	if cs, err := tb.Counters(); err != nil || len(cs) != 4 {
		t.Fatalf("counters %v %v, want the 4 flows of two legs", cs, err)
	}
}

// TestStaleTableAndClose: a table left behind (a run that never closed)
// is replaced at the next Open; Close deletes it.
func TestStaleTableAndClose(t *testing.T) {
	tp := newTopo(t)
	var (
		stale   *Table
		openErr error
	)
	in(t, tp.r, func() error { stale, openErr = Open(Config{}); return nil })
	skipIfNoNetfilterNetlink(t, openErr)
	if openErr != nil {
		t.Fatal(openErr)
	}
	if err := stale.Apply(nil, []Leg{{A: Flow{Peer: netip.AddrPortFrom(peerA, 5000), Port: 28000},
		B: Flow{Peer: netip.AddrPortFrom(peerB, 6000), Port: 28002}, LocalA: relayA, LocalB: relayB}}); err != nil {
		t.Fatal(err)
	}
	stale.conn.CloseLasting() // as if the process died: the table stays
	if l := tp.nftList(t, DefaultTable); !strings.Contains(l, "28002") {
		t.Fatalf("stale table:\n%s", l)
	}
	tb := tp.open(t, Config{})
	l := tp.nftList(t, DefaultTable)
	if l == "" || strings.Contains(l, "28002") || !strings.Contains(l, "chain pre") || !strings.Contains(l, "chain post") {
		t.Fatalf("after Open:\n%s", l)
	}
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	if l := tp.nftList(t, DefaultTable); l != "" {
		t.Fatalf("table after Close:\n%s", l)
	}
	if err := tb.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestUnavailable(t *testing.T) {
	tp := newTopo(t)
	tp.forwarding(t, false)
	var err error
	in(t, tp.r, func() error { _, err = Open(Config{}); return nil })
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.Reason != "ip_forward_off" {
		t.Fatalf("Open with forwarding off: %v", err)
	}
	if l := tp.nftList(t, DefaultTable); l != "" {
		t.Fatalf("table created although unavailable:\n%s", l)
	}
}
