package tcfwd

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
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel/nft"
)

// The tests build their own network, as the program runs in the kernel
// of whatever namespace it is opened in:
//
//	ns a (192.0.2.2/24) ── (192.0.2.1/24 ra) ns r (rb 198.51.100.1/24) ── (198.51.100.2/24) ns b
//
// r is the relay with forwarding on; a and b are the two peers and route
// everything through r. The links' MTU is 1600, so that the largest
// payload the program takes (1500 bytes) and the next larger one cross
// unfragmented. The peers compute their checksums in software
// (transmit checksum offload off), so b's and a's kernels verify what
// the program rewrote. TEST-NET addresses only, nothing leaves the
// namespaces.

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
		t.Skip("skipping: needs root (network namespaces, BPF)")
	}
	id := fmt.Sprintf("jntc-%x%04x", os.Getpid(), rand.Uint32N(1<<16))
	tp := &topo{a: id + "-a", r: id + "-r", b: id + "-b"}
	for _, ns := range []string{tp.a, tp.r, tp.b} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "-n", tp.r, "link", "add", "ra", "type", "veth", "peer", "name", "eth0", "netns", tp.a)
	run(t, "ip", "-n", tp.r, "link", "add", "rb", "type", "veth", "peer", "name", "eth0", "netns", tp.b)
	for _, s := range [][]string{
		{"-n", tp.r, "addr", "add", relayA.String() + "/24", "dev", "ra"},
		{"-n", tp.r, "addr", "add", relayB.String() + "/24", "dev", "rb"},
		{"-n", tp.a, "addr", "add", peerA.String() + "/24", "dev", "eth0"},
		{"-n", tp.b, "addr", "add", peerB.String() + "/24", "dev", "eth0"},
		{"-n", tp.r, "link", "set", "ra", "mtu", "1600", "up"}, {"-n", tp.r, "link", "set", "rb", "mtu", "1600", "up"},
		{"-n", tp.a, "link", "set", "eth0", "mtu", "1600", "up"}, {"-n", tp.b, "link", "set", "eth0", "mtu", "1600", "up"},
		{"-n", tp.a, "route", "add", "default", "via", relayA.String()},
		{"-n", tp.b, "route", "add", "default", "via", relayB.String()},
	} {
		run(t, append([]string{"ip"}, s...)...)
	}
	for _, ns := range []string{tp.a, tp.b} {
		run(t, "ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off")
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
	run(t, "ip", "netns", "exec", tp.r, "sysctl", "-qw", "net.ipv4.ip_forward="+v)
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// in runs fn on a thread inside namespace ns; sockets fn opens stay in
// ns and are usable from any goroutine.
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

// open opens a forwarder in the relay namespace. Its netlink calls
// (Sync, Counters, Close) must run there too: inR.
func (tp *topo) open(t *testing.T, cfg Config) *Forwarder {
	t.Helper()
	var (
		f       *Forwarder
		openErr error
	)
	in(t, tp.r, func() error { f, openErr = Open(cfg); return nil })
	skipIfUnsupported(t, openErr)
	if openErr != nil {
		t.Fatal(openErr)
	}
	t.Cleanup(func() { in(t, tp.r, f.Close) })
	return f
}

// skipIfUnsupported skips where this host cannot load the program at
// all: qemu-user (make test-cross) emulates no bpf(2).
func skipIfUnsupported(t *testing.T, err error) {
	t.Helper()
	var ue *nft.UnavailableError
	if errors.As(err, &ue) && (ue.Reason == "no_bpf" || ue.Reason == "no_tcx") && os.Getenv("JNRELAY_QEMU_USER") == "1" {
		t.Skipf("%v: not under qemu-user", err)
	}
}

func (tp *topo) udp(t *testing.T, ns string, ap netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	in(t, ns, func() (err error) { c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap)); return err })
	t.Cleanup(func() { c.Close() })
	return c
}

// expect reads one datagram on c and checks its payload and source.
func expect(t *testing.T, c *net.UDPConn, payload []byte, from netip.AddrPort) {
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

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

func TestForwarding(t *testing.T) {
	for _, attach := range []Attach{AttachTCX, AttachClsact} {
		for _, listen := range []netip.Addr{netip.IPv4Unspecified(), relayA} {
			t.Run(fmt.Sprintf("%s/listen=%s", attach, listen), func(t *testing.T) { testForwarding(t, attach, listen) })
		}
	}
}

func testForwarding(t *testing.T, attach Attach, listen netip.Addr) {
	tp := newTopo(t)
	f := tp.open(t, Config{Listen: listen, MaxFlows: 16, Attach: attach})
	counters := func() map[nft.Flow]nft.Counter {
		var cs map[nft.Flow]nft.Counter
		in(t, tp.r, func() (err error) { cs, err = f.Counters(); return err })
		return cs
	}
	// The relay's sockets: what the kernel does not forward arrives here.
	relayP := tp.udp(t, tp.r, netip.AddrPortFrom(netip.IPv4Unspecified(), 28000))
	relayQ := tp.udp(t, tp.r, netip.AddrPortFrom(netip.IPv4Unspecified(), 28002))
	a := tp.udp(t, tp.a, netip.AddrPortFrom(peerA, 5000))
	foreign := tp.udp(t, tp.a, netip.AddrPortFrom(peerA, 5001))
	b := tp.udp(t, tp.b, netip.AddrPortFrom(peerB, 6000))
	// With listen=relayA, B's side is reached at relayA too (one address,
	// as a relay's channel result names one host).
	toP, toQ := netip.AddrPortFrom(relayA, 28000), netip.AddrPortFrom(relayA, 28002)
	leg := nft.Leg{A: nft.Flow{Peer: addrOf(a), Port: 28000}, B: nft.Flow{Peer: addrOf(b), Port: 28002},
		LocalA: relayA, LocalB: relayB}
	if listen.IsUnspecified() {
		toQ = netip.AddrPortFrom(relayB, 28002)
	} else {
		leg.LocalB = relayA
	}

	// Before offload: everything reaches the relay's sockets.
	send(t, a, []byte("before"), toP)
	expect(t, relayP, []byte("before"), leg.A.Peer)

	if err := f.Apply(nil, []nft.Leg{leg}); err != nil {
		t.Fatal(err)
	}
	send(t, a, []byte("a->b"), toP)
	expect(t, b, []byte("a->b"), netip.AddrPortFrom(leg.LocalB, 28002))
	send(t, b, []byte("b->a!"), toQ)
	expect(t, a, []byte("b->a!"), netip.AddrPortFrom(leg.LocalA, 28000))
	expectNone(t, relayP)
	expectNone(t, relayQ)

	// Another source port of the same host, an oversize datagram of the
	// latched peer and a fragmented one reach the relay's socket and
	// nobody else.
	send(t, foreign, []byte("intruder"), toP)
	expect(t, relayP, []byte("intruder"), addrOf(foreign))
	big := make([]byte, maxPayload+1)
	send(t, a, big, toP)
	expect(t, relayP, big, leg.A.Peer)
	fragmented := make([]byte, 1700)
	send(t, a, fragmented, toP)
	expect(t, relayP, fragmented, leg.A.Peer)
	full := make([]byte, maxPayload)
	for i := range full {
		full[i] = byte(i * 7)
	}
	send(t, a, full, toP)
	expect(t, b, full, netip.AddrPortFrom(leg.LocalB, 28002))
	expectNone(t, b)

	// A datagram without a UDP checksum (0, allowed over IPv4) keeps
	// none: a rewritten one with a wrong sum would be dropped by b.
	noSum := tp.udp(t, tp.a, netip.AddrPortFrom(peerA, 5002))
	rc, err := noSum.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1) }); err != nil {
		t.Fatal(err)
	}
	noSumLeg := nft.Leg{A: nft.Flow{Peer: addrOf(noSum), Port: 28004}, B: nft.Flow{Peer: netip.AddrPortFrom(peerB, 6000), Port: 28006},
		LocalA: leg.LocalA, LocalB: leg.LocalB}
	if err := f.Apply(nil, []nft.Leg{noSumLeg}); err != nil {
		t.Fatal(err)
	}
	send(t, noSum, []byte("no checksum"), netip.AddrPortFrom(relayA, 28004))
	expect(t, b, []byte("no checksum"), netip.AddrPortFrom(leg.LocalB, 28006))

	cs := counters()
	want := map[nft.Flow]nft.Counter{leg.A: {Packets: 2, Bytes: 4 + maxPayload}, leg.B: {Packets: 1, Bytes: 5},
		noSumLeg.A: {Packets: 1, Bytes: 11}, noSumLeg.B: {}}
	if len(cs) != len(want) {
		t.Fatalf("counters %v, want %v", cs, want)
	}
	for fl, c := range want {
		if cs[fl] != c {
			t.Fatalf("counters %v, want %v", cs, want)
		}
	}

	// A replaced leg (the peer on A moved) and a removed one.
	moved := leg
	moved.A.Peer = addrOf(foreign)
	if err := f.Apply([]nft.Leg{leg}, []nft.Leg{moved}); err != nil {
		t.Fatal(err)
	}
	send(t, a, []byte("old"), toP)
	expect(t, relayP, []byte("old"), leg.A.Peer)
	send(t, foreign, []byte("new"), toP)
	expect(t, b, []byte("new"), netip.AddrPortFrom(leg.LocalB, 28002))
	send(t, b, []byte("back"), toQ)
	expect(t, foreign, []byte("back"), netip.AddrPortFrom(leg.LocalA, 28000))
	if err := f.Apply([]nft.Leg{moved, noSumLeg}, nil); err != nil {
		t.Fatal(err)
	}
	send(t, foreign, []byte("gone"), toP)
	expect(t, relayP, []byte("gone"), moved.A.Peer)
	if cs := counters(); len(cs) != 0 {
		t.Fatalf("counters after removal: %v", cs)
	}

	// Forwarding turned off under it: the route lookup declines and
	// userspace gets the datagram.
	if err := f.Apply(nil, []nft.Leg{leg}); err != nil {
		t.Fatal(err)
	}
	tp.forwarding(t, false)
	send(t, a, []byte("no forwarding"), toP)
	expect(t, relayP, []byte("no forwarding"), leg.A.Peer)
	tp.forwarding(t, true)

	// Close: the program is gone from the interfaces.
	in(t, tp.r, f.Close)
	send(t, a, []byte("closed"), toP)
	expect(t, relayP, []byte("closed"), leg.A.Peer)
}

func TestConflictAndInvalid(t *testing.T) {
	tp := newTopo(t)
	f := tp.open(t, Config{MaxFlows: 16})
	leg := nft.Leg{A: nft.Flow{Peer: netip.AddrPortFrom(peerA, 5000), Port: 28000}, B: nft.Flow{Peer: netip.AddrPortFrom(peerB, 6000), Port: 28002},
		LocalA: relayA, LocalB: relayB}
	if err := f.Apply(nil, []nft.Leg{leg}); err != nil {
		t.Fatal(err)
	}
	// The same flow on another leg.
	other := leg
	other.B.Port = 28006
	ok := leg
	ok.A.Port, ok.B.Port, ok.A.Peer = 28008, 28010, netip.AddrPortFrom(peerA, 5002)
	if err := f.Apply(nil, []nft.Leg{ok, other}); !errors.Is(err, nft.ErrConflict) {
		t.Fatalf("conflicting leg: %v, want ErrConflict", err)
	}
	// Nothing of the failed call was installed; ok alone goes in.
	if err := f.Apply(nil, []nft.Leg{ok}); err != nil {
		t.Fatal(err)
	}
	v6 := leg
	v6.A.Peer = netip.MustParseAddrPort("[2001:db8::1]:5000")
	if err := f.Apply(nil, []nft.Leg{v6}); err == nil || !strings.Contains(err.Error(), "IPv4 only") {
		t.Fatalf("IPv6 leg: %v", err)
	}
	if err := f.Apply([]nft.Leg{other}, nil); err == nil {
		t.Fatal("removing a leg that is not installed succeeded")
	}
	var cs map[nft.Flow]nft.Counter
	in(t, tp.r, func() (err error) { cs, err = f.Counters(); return err })
	if len(cs) != 4 {
		t.Fatalf("counters %v, want the 4 flows of two legs", cs)
	}
	// The map is full at MaxFlows: the kernel refuses and the call
	// changes nothing.
	var many []nft.Leg
	for i := range 7 {
		many = append(many, nft.Leg{A: nft.Flow{Peer: netip.AddrPortFrom(peerA, uint16(7000+i)), Port: uint16(29000 + 2*i)},
			B: nft.Flow{Peer: netip.AddrPortFrom(peerB, uint16(7000+i)), Port: uint16(29001 + 2*i)}, LocalA: relayA, LocalB: relayB})
	}
	if err := f.Apply(nil, many); !errors.Is(err, syscall.E2BIG) {
		t.Fatalf("flows beyond MaxFlows: %v, want E2BIG", err)
	}
	in(t, tp.r, func() (err error) { cs, err = f.Counters(); return err })
	if len(cs) != 4 {
		t.Fatalf("after the refused call: %d flows, want 4", len(cs))
	}
}

// TestStaleFilter: a clsact filter left by a run that never closed is
// replaced at the next Open, and Close removes it. (TCX links need no
// such care: the kernel drops them with the process's descriptors.)
func TestStaleFilter(t *testing.T) {
	tp := newTopo(t)
	var stale *Forwarder
	var err error
	in(t, tp.r, func() error { stale, err = Open(Config{Attach: AttachClsact}); return nil })
	skipIfUnsupported(t, err)
	if err != nil {
		t.Fatal(err)
	}
	stale.closeFDs() // as if the process died: the filters stay, holding the program
	filters := func() string {
		out, err := exec.Command("ip", "netns", "exec", tp.r, "tc", "filter", "show", "dev", "ra", "ingress").CombinedOutput()
		if err != nil {
			t.Fatalf("tc filter show: %v: %s", err, out)
		}
		return string(out)
	}
	if got := filters(); strings.Count(got, "direct-action") != 1 {
		t.Fatalf("stale filter:\n%s", got)
	}
	f := tp.open(t, Config{Attach: AttachClsact})
	if got := filters(); strings.Count(got, "direct-action") != 1 {
		t.Fatalf("after Open, want exactly one filter:\n%s", got)
	}
	in(t, tp.r, f.Close)
	if got := filters(); strings.Contains(got, "jnrelay_fwd") {
		t.Fatalf("filter after Close:\n%s", got)
	}
}

func TestUnavailable(t *testing.T) {
	tp := newTopo(t)
	tp.forwarding(t, false)
	var err error
	in(t, tp.r, func() error { _, err = Open(Config{}); return nil })
	var ue *nft.UnavailableError
	if !errors.As(err, &ue) || ue.Reason != "ip_forward_off" {
		t.Fatalf("Open with forwarding off: %v", err)
	}
}

// TestProgramShape checks the assembler's output without a kernel: every
// jump lands inside the program, and both exits are reached by the
// expected paths.
func TestProgramShape(t *testing.T) {
	for _, listen := range []netip.Addr{netip.IPv4Unspecified(), relayA} {
		p := program(listen, 3, 4, 5)
		if last := p[len(p)-1]; last.Code != 0x95 {
			t.Fatalf("program ends with opcode %#x, not exit", last.Code)
		}
		for i, in := range p {
			if in.Code&0x07 == 0x05 && in.Code != 0x85 && in.Code != 0x95 { // BPF_JMP, not call/exit
				if to := i + 1 + int(in.Off); to <= i || to >= len(p) {
					t.Errorf("listen %s: jump at %d lands on %d (program of %d)", listen, i, to, len(p))
				}
			}
		}
	}
}
