package offload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel/nft"
)

// The broker's tests run a real broker on a real unix socket, checking
// real UDP sockets through the kernel's socket lookup; only the kernel
// table is a recording fake (the kernel tables have their own tests, and
// tests/e2e runs the whole with them).

// fakeTable records what the broker installs.
type fakeTable struct {
	mu       sync.Mutex
	legs     map[nft.Leg]bool
	counters map[nft.Flow]nft.Counter
	applyErr error
	removed  chan nft.Leg  // every leg removed
	closed   chan struct{} // closed by Close
}

func newFakeTable() *fakeTable {
	return &fakeTable{legs: map[nft.Leg]bool{}, removed: make(chan nft.Leg, 64), closed: make(chan struct{})}
}

func (f *fakeTable) Apply(remove, add []nft.Leg) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.applyErr != nil {
		return f.applyErr
	}
	for _, l := range remove {
		delete(f.legs, l)
		select {
		case f.removed <- l:
		default: // a benchmark's many removals: nobody reads them
		}
	}
	for _, l := range add {
		f.legs[l] = true
	}
	return nil
}

func (f *fakeTable) Counters() (map[nft.Flow]nft.Counter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counters, nil
}

func (f *fakeTable) Close() error { close(f.closed); return nil }
func (f *fakeTable) Name() string { return "fake table" }

func (f *fakeTable) installed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.legs)
}

// broker is a running broker and the tables it opened.
type broker struct {
	*Broker
	socket string
	tables chan *fakeTable
}

// startBroker serves on a socket in a fresh directory every user may
// reach, for client uid (root is served too).
func startBroker(t testing.TB, uid uint32, mod func(*Config)) *broker {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (sockets of other users)")
	}
	needSockDiag(t)
	// Not t.TempDir: its parent is private to root.
	dir, err := os.MkdirTemp("", "offload")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "offload.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(socket, 0o666); err != nil {
		t.Fatal(err)
	}
	b := &broker{socket: socket, tables: make(chan *fakeTable, 4)}
	cfg := Config{UID: uid, Recheck: time.Hour, Logger: slog.New(slog.DiscardHandler),
		Open: func(mode string, listen netip.Addr, maxFlows int) (KernelTable, error) {
			ft := newFakeTable()
			b.tables <- ft
			return ft, nil
		}}
	if mod != nil {
		mod(&cfg)
	}
	b.Broker = New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return b
}

// open opens a table through b on listen, and the fake behind it.
func (b *broker) open(t testing.TB, listen string, maxFlows int) (*Table, *fakeTable) {
	t.Helper()
	tb, err := Open(context.Background(), b.socket, ModeEBPF, netip.MustParseAddr(listen), maxFlows)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	return tb, <-b.tables
}

// udpAs binds a UDP socket on addr as uid (the socket's owner is the
// file-system uid of the thread that creates it), with SO_REUSEADDR when
// reuse is set.
func udpAs(t testing.TB, uid int, addr string, reuse bool) *net.UDPConn {
	t.Helper()
	runtime.LockOSThread()
	prev := setfsuid(uid)
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if reuse {
			c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
	if setfsuid(prev) == uid || prev == uid {
		runtime.UnlockOSThread() // else the thread ends with the goroutine
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.(*net.UDPConn)
}

func port(c *net.UDPConn) uint16 { return c.LocalAddr().(*net.UDPAddr).AddrPort().Port() }

// leg is a leg between ports a and b of local, peers in TEST-NET.
func leg(local string, a, b uint16) nft.Leg {
	l := netip.MustParseAddr(local)
	return nft.Leg{
		A:      nft.Flow{Peer: netip.MustParseAddrPort("192.0.2.10:5000"), Port: a},
		B:      nft.Flow{Peer: netip.MustParseAddrPort("198.51.100.10:6000"), Port: b},
		LocalA: l, LocalB: l,
	}
}

func TestOwnPortsAccepted(t *testing.T) {
	b := startBroker(t, 4242, nil)
	tb, ft := b.open(t, "127.0.0.1", 16)
	pa, pb := udpAs(t, 0, "127.0.0.1:0", false), udpAs(t, 0, "127.0.0.1:0", false)
	l := leg("127.0.0.1", port(pa), port(pb))
	if err := tb.Apply(nil, []nft.Leg{l}); err != nil {
		t.Fatalf("leg on the client's own ports refused: %v", err)
	}
	if ft.installed() != 1 {
		t.Fatalf("installed %d legs, want 1", ft.installed())
	}
	if err := tb.Apply([]nft.Leg{l}, nil); err != nil {
		t.Fatal(err)
	}
	if ft.installed() != 0 {
		t.Fatalf("installed %d legs after removal, want 0", ft.installed())
	}
	if b.Refused() != 0 {
		t.Fatalf("refused %d, want 0", b.Refused())
	}
}

// TestForeignPortRefused is the attack: relayd, compromised, asks for a
// leg on a port another user's program holds — a connected socket, as a
// resolver's query is, and a bound one. Nothing reaches the kernel.
func TestForeignPortRefused(t *testing.T) {
	b := startBroker(t, 4242, nil)
	tb, ft := b.open(t, "127.0.0.1", 16)
	own := udpAs(t, 0, "127.0.0.1:0", false)
	bound := udpAs(t, 1234, "127.0.0.1:0", false)
	if err := tb.Apply(nil, []nft.Leg{leg("127.0.0.1", port(own), port(bound))}); !errors.Is(err, ErrRefused) {
		t.Fatalf("leg on uid 1234's bound port: %v, want ErrRefused", err)
	}
	// A "resolver" of uid 1234 connected to 127.0.0.53:53 from an
	// ephemeral port: a leg taking its answers.
	l := leg("127.0.0.1", port(own), port(bound))
	l.B = nft.Flow{Peer: netip.MustParseAddrPort("127.0.0.53:53"), Port: connectedAs(t, 1234, "127.0.0.1:0", "127.0.0.53:53")}
	if err := tb.Apply(nil, []nft.Leg{l}); !errors.Is(err, ErrRefused) {
		t.Fatalf("leg on uid 1234's connected port: %v, want ErrRefused", err)
	}
	// A port nobody holds is refused too: the next to bind it would be
	// robbed.
	free := udpAs(t, 0, "127.0.0.1:0", false)
	fp := port(free)
	free.Close()
	if err := tb.Apply(nil, []nft.Leg{leg("127.0.0.1", port(own), fp)}); !errors.Is(err, ErrRefused) {
		t.Fatalf("leg on a free port: %v, want ErrRefused", err)
	}
	if n := ft.installed(); n != 0 {
		t.Fatalf("%d legs installed, want none", n)
	}
	if b.Refused() != 3 {
		t.Fatalf("refused %d, want 3", b.Refused())
	}
	// The session goes on: a good leg still passes.
	other := udpAs(t, 0, "127.0.0.1:0", false)
	if err := tb.Apply(nil, []nft.Leg{leg("127.0.0.1", port(own), port(other))}); err != nil {
		t.Fatalf("good leg after refusals: %v", err)
	}
}

// connectedAs opens a UDP socket of uid on local connected to peer and
// returns its port.
func connectedAs(t *testing.T, uid int, local, peer string) uint16 {
	t.Helper()
	runtime.LockOSThread()
	prev := setfsuid(uid)
	c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(local)), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(peer)))
	if setfsuid(prev) == uid || prev == uid {
		runtime.UnlockOSThread()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
}

// TestUnspecifiedListenChecksEveryAddress: opened on the unspecified
// address the rules match the port at every host address, so a socket
// of another user bound to one of them (both with SO_REUSEADDR) refuses
// the leg even though the leg's own address is the client's.
func TestUnspecifiedListenChecksEveryAddress(t *testing.T) {
	b := startBroker(t, 4242, func(c *Config) {
		c.HostAddrs = func() ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.5")}, nil
		}
	})
	tb, ft := b.open(t, "0.0.0.0", 16)
	pa, pb := udpAs(t, 0, "0.0.0.0:0", true), udpAs(t, 0, "0.0.0.0:0", true)
	if err := tb.Apply(nil, []nft.Leg{leg("127.0.0.1", port(pa), port(pb))}); err != nil {
		t.Fatalf("leg on wildcard sockets of the client: %v", err)
	}
	udpAs(t, 1234, fmt.Sprintf("127.0.0.5:%d", port(pb)), true)
	pc := udpAs(t, 0, "0.0.0.0:0", true)
	udpAs(t, 1234, fmt.Sprintf("127.0.0.5:%d", port(pc)), true)
	if err := tb.Apply(nil, []nft.Leg{leg("127.0.0.1", port(pa), port(pc))}); !errors.Is(err, ErrRefused) {
		t.Fatalf("port shadowed at another host address: %v, want ErrRefused", err)
	}
	if err := tb.Apply(nil, []nft.Leg{leg("10.9.9.9", port(pa), port(pa)+0)}); !errors.Is(err, ErrRefused) {
		t.Fatalf("leg from an address not the host's: %v, want ErrRefused", err)
	}
	if ft.installed() != 1 {
		t.Fatalf("installed %d, want 1", ft.installed())
	}
}

func TestListenAddressAndFlowBound(t *testing.T) {
	b := startBroker(t, 4242, nil)
	tb, ft := b.open(t, "127.0.0.1", 4)
	ports := make([]uint16, 4)
	for i := range ports {
		ports[i] = port(udpAs(t, 0, "0.0.0.0:0", false))
	}
	if err := tb.Apply(nil, []nft.Leg{leg("127.0.0.2", ports[0], ports[1])}); !errors.Is(err, ErrRefused) {
		t.Fatalf("leg from another address than the listen one: %v, want ErrRefused", err)
	}
	if err := tb.Apply(nil, []nft.Leg{leg("127.0.0.1", ports[0], ports[1]), leg("127.0.0.1", ports[2], ports[3])}); err != nil {
		t.Fatalf("two legs, four flows, in a table of four: %v", err)
	}
	extra := leg("127.0.0.1", ports[1], ports[2])
	if err := tb.Apply(nil, []nft.Leg{extra}); !errors.Is(err, ErrRefused) {
		t.Fatalf("a fifth and sixth flow: %v, want ErrRefused", err)
	}
	if err := tb.Apply([]nft.Leg{leg("127.0.0.1", ports[0], ports[1])}, []nft.Leg{extra}); err != nil {
		t.Fatalf("replacing a leg within the bound: %v", err)
	}
	if ft.installed() != 2 {
		t.Fatalf("installed %d, want 2", ft.installed())
	}
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), b.socket, ModeEBPF, netip.MustParseAddr("127.0.0.1"), DefaultMaxFlows+1); !errors.Is(err, ErrRefused) {
		t.Fatalf("a table above the broker's bound: %v, want ErrRefused", err)
	}
}

// TestErrorsKeepTheirIdentity: relayd's fast path tells a conflict from
// other failures with errors.Is.
func TestErrorsKeepTheirIdentity(t *testing.T) {
	b := startBroker(t, 4242, nil)
	tb, ft := b.open(t, "127.0.0.1", 16)
	pa, pb := udpAs(t, 0, "127.0.0.1:0", false), udpAs(t, 0, "127.0.0.1:0", false)
	ft.mu.Lock()
	ft.applyErr = fmt.Errorf("update map: %w", nft.ErrConflict)
	ft.mu.Unlock()
	if err := tb.Apply(nil, []nft.Leg{leg("127.0.0.1", port(pa), port(pb))}); !errors.Is(err, nft.ErrConflict) {
		t.Fatalf("Apply: %v, want nft.ErrConflict", err)
	}
	b2 := startBroker(t, 4242, func(c *Config) {
		c.Open = func(string, netip.Addr, int) (KernelTable, error) {
			return nil, &nft.UnavailableError{Reason: "ip_forward_off", Err: errors.New("net.ipv4.ip_forward is 0")}
		}
	})
	_, err := Open(context.Background(), b2.socket, ModeAuto, netip.MustParseAddr("127.0.0.1"), 16)
	var un *nft.UnavailableError
	if !errors.As(err, &un) || un.Reason != "ip_forward_off" {
		t.Fatalf("Open: %v, want *nft.UnavailableError ip_forward_off", err)
	}
}

// TestCountersManyFrames reads more counters than one frame carries.
func TestCountersManyFrames(t *testing.T) {
	b := startBroker(t, 4242, nil)
	tb, ft := b.open(t, "127.0.0.1", 16)
	want := map[nft.Flow]nft.Counter{}
	for i := range 3*maxCountersPerFrame + 7 {
		f := nft.Flow{Peer: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 5000), Port: uint16(i%60000 + 1)}
		want[f] = nft.Counter{Packets: uint64(i), Bytes: uint64(i) * 100}
	}
	ft.mu.Lock()
	ft.counters = want
	ft.mu.Unlock()
	got, err := tb.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d counters, want %d", len(got), len(want))
	}
	for f, c := range want {
		if got[f] != c {
			t.Fatalf("flow %v: %+v, want %+v", f, got[f], c)
		}
	}
}

// TestPortGivenUpLeavesTheKernel: the recheck removes a leg whose port
// the client closed, before another program can bind it and be robbed.
func TestPortGivenUpLeavesTheKernel(t *testing.T) {
	b := startBroker(t, 4242, func(c *Config) { c.Recheck = 20 * time.Millisecond })
	tb, ft := b.open(t, "127.0.0.1", 16)
	pa, pb := udpAs(t, 0, "127.0.0.1:0", false), udpAs(t, 0, "127.0.0.1:0", false)
	keep, kb := udpAs(t, 0, "127.0.0.1:0", false), udpAs(t, 0, "127.0.0.1:0", false)
	l := leg("127.0.0.1", port(pa), port(pb))
	if err := tb.Apply(nil, []nft.Leg{l, leg("127.0.0.1", port(keep), port(kb))}); err != nil {
		t.Fatal(err)
	}
	pb.Close()
	select {
	case got := <-ft.removed:
		if got != l {
			t.Fatalf("removed %v, want %v", got, l)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the leg on a closed port stayed in the kernel")
	}
	if ft.installed() != 1 {
		t.Fatalf("installed %d, want the other leg only", ft.installed())
	}
	// relayd removing it later is no error.
	if err := tb.Apply([]nft.Leg{l}, nil); err != nil {
		t.Fatalf("removing a leg the broker took out: %v", err)
	}
}

// TestClientGoneRemovesTable: the broker removes the table when its
// client leaves, and serves the next one.
func TestClientGoneRemovesTable(t *testing.T) {
	b := startBroker(t, 4242, nil)
	tb, ft := b.open(t, "127.0.0.1", 16)
	tb.conn.Close() // as a crash would
	select {
	case <-ft.closed:
	case <-time.After(30 * time.Second):
		t.Fatal("table not removed after the client left")
	}
	tb2, _ := b.open(t, "127.0.0.1", 16)
	if err := tb2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tb2.Counters(); !errors.Is(err, ErrBrokerGone) {
		t.Fatalf("Counters after Close: %v, want ErrBrokerGone", err)
	}
}

// TestOtherUserRefused: a connection from a uid that is neither relayd's
// nor root is closed before any request.
func TestOtherUserRefused(t *testing.T) {
	b := startBroker(t, 4242, nil)
	var err error
	asEUID(t, 65534, func() {
		_, err = Open(context.Background(), b.socket, ModeEBPF, netip.MustParseAddr("127.0.0.1"), 16)
	})
	if !errors.Is(err, ErrBrokerGone) {
		t.Fatalf("Open as uid 65534: %v, want the connection closed", err)
	}
	if b.Refused() != 1 {
		t.Fatalf("refused %d, want 1", b.Refused())
	}
	if len(b.tables) != 0 {
		t.Fatal("a table was opened for a refused user")
	}
}

// asEUID runs fn on a thread whose effective uid is uid (the uid
// SO_PEERCRED reports for a connection made meanwhile).
func asEUID(t *testing.T, uid int, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
		runtime.UnlockOSThread()
		t.Fatalf("seteuid %d: %v", uid, e)
	}
	fn()
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
		t.Fatalf("seteuid back: %v", e) // the locked thread ends with the test's goroutine
	}
	runtime.UnlockOSThread()
}

// setfsuid sets the calling thread's file-system uid (the owner of the
// sockets it creates) and returns the previous one.
func setfsuid(uid int) int {
	prev, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, uintptr(uid), 0, 0)
	return int(prev)
}

// TestOpenWaitsForTheBroker: a broker whose socket appears while Open
// waits (procd starts it beside relayd) is used; with none at all, Open
// fails with the reason once the wait is over.
func TestOpenWaitsForTheBroker(t *testing.T) {
	b := startBroker(t, 4242, nil)
	hidden := b.socket + ".hidden"
	if err := os.Rename(b.socket, hidden); err != nil {
		t.Fatal(err)
	}
	opened := make(chan error, 1)
	go func() {
		tb, err := Open(context.Background(), b.socket, ModeEBPF, netip.MustParseAddr("127.0.0.1"), 16)
		if err == nil {
			tb.Close()
		}
		opened <- err
	}()
	if err := os.Rename(hidden, b.socket); err != nil {
		t.Fatal(err)
	}
	if err := <-opened; err != nil {
		t.Fatalf("Open while the socket appeared: %v", err)
	}
	if _, err := Open(context.Background(), b.socket+".none", ModeEBPF, netip.MustParseAddr("127.0.0.1"), 16); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("Open without a broker: %v, want ENOENT", err)
	}
}

// TestUnprivilegedClientRootPort is the attack as relayd would make it:
// a client of uid 4242 asks for a leg on a port a root process holds —
// refused, nothing installed — while a leg on its own ports passes.
func TestUnprivilegedClientRootPort(t *testing.T) {
	b := startBroker(t, 4242, nil)
	var tb *Table
	var err error
	asEUID(t, 4242, func() {
		tb, err = Open(context.Background(), b.socket, ModeEBPF, netip.MustParseAddr("127.0.0.1"), 16)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	ft := <-b.tables
	own, own2 := udpAs(t, 4242, "127.0.0.1:0", false), udpAs(t, 4242, "127.0.0.1:0", false)
	roots := udpAs(t, 0, "127.0.0.1:0", false)
	if err := tb.Apply(nil, []nft.Leg{leg("127.0.0.1", port(own), port(roots))}); !errors.Is(err, ErrRefused) {
		t.Fatalf("leg on root's port: %v, want ErrRefused", err)
	}
	if ft.installed() != 0 || b.Refused() != 1 {
		t.Fatalf("installed %d, refused %d; want 0 and 1", ft.installed(), b.Refused())
	}
	if err := tb.Apply(nil, []nft.Leg{leg("127.0.0.1", port(own), port(own2))}); err != nil {
		t.Fatalf("leg on the client's own ports: %v", err)
	}
	if ft.installed() != 1 {
		t.Fatalf("installed %d, want 1", ft.installed())
	}
}
