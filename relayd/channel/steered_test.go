package channel

import (
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel"
)

// newSteeredManager is newTestManager in steered mode, skipped where the
// host cannot steer (not root, no BPF).
func newSteeredManager(t *testing.T, mod func(*Config)) (*Manager, chan End) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("steered ports need root (CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW)")
	}
	ends := make(chan End, 256)
	cfg := Config{Listen: loopback, Sockets: SocketsSteered, Settings: Settings{PortMin: 26600, PortMax: 26999,
		Expire: time.Minute, LatchGrace: 5 * time.Second}, OnEnd: func(e End) { ends <- e }}
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg)
	// qemu-user (make test-cross) translates neither bpf(2) nor
	// IP_RECVORIGDSTADDR.
	if kernel.SteeringUnsupported(err) ||
		(errors.Is(err, unix.ENOPROTOOPT) && os.Getenv("JNRELAY_QEMU_USER") == "1") {
		t.Skipf("steering unavailable here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m, ends
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestSteeredRelay runs a call through steered ports: both legs both
// ways from the relay's own ports, foreign sources and unallocated ports
// dropped and counted, and channels that cost no file descriptors.
func TestSteeredRelay(t *testing.T) {
	m, ends := newSteeredManager(t, nil)
	before := openFDs(t)
	info, a, b, ac, bc := call(t, m) // latches both legs; checks the source ports
	base := liveStats(t, m, info.ID)
	p := info.LocalPort
	for i := range 20 {
		a.send(p, fmt.Appendf(nil, "a-%d", i))
		b.expect(fmt.Appendf(nil, "a-%d", i), p+2)
		b.send(p+2, fmt.Appendf(nil, "b-%d", i))
		a.expect(fmt.Appendf(nil, "b-%d", i), p)
		ac.send(p+1, fmt.Appendf(nil, "ac-%d", i))
		bc.expect(fmt.Appendf(nil, "ac-%d", i), p+3)
	}
	intruder := newParty(t)
	intruder.send(p, []byte("evil"))
	a.send(p, []byte("marker"))
	b.expect([]byte("marker"), p+2)
	s := since(liveStats(t, m, info.ID), base)
	// Forwarded: RTP and RTCP 20 each plus the marker one way; 20 RTP the
	// other.
	if s.Packets[LocalToRemote] != 2*20+1 || s.Packets[RemoteToLocal] != 20 {
		t.Errorf("packets %v, want [%d %d]", s.Packets, 2*20+1, 20)
	}
	if s.Dropped[DropForeignSource] != 1 {
		t.Errorf("foreign drops %d, want 1", s.Dropped[DropForeignSource])
	}

	// A port of the range that no channel holds is not steered: another
	// program's socket bound there keeps its datagrams.
	free := 26998
	if free >= p && free < p+4 {
		free = 26600
	}
	other := newPartyOn(t, free)
	intruder.send(free, []byte("for-other"))
	other.expect([]byte("for-other"), intruder.localPort())
	if n := m.Totals().Stats.Dropped[DropNoChannel]; n != 0 {
		t.Errorf("no_channel %d: a free port's datagram reached the relay", n)
	}

	// Many more channels, no more descriptors.
	for range 50 {
		if _, err := m.Allocate(); err != nil {
			t.Fatal(err)
		}
	}
	if got := openFDs(t); got > before+8 { // the test's own parties
		t.Errorf("%d descriptors open after 51 channels, %d before", got, before)
	}
	if !m.Kill(info.ID) {
		t.Fatal("kill")
	}
	if e := <-ends; since(e.Stats, base).Packets[LocalToRemote] != s.Packets[LocalToRemote] {
		t.Errorf("end reports %v", e.Stats.Packets)
	}
}

// TestSteeredRangeChange: after a new port range, channels of the old one
// keep relaying and new ones come from the new range.
func TestSteeredRangeChange(t *testing.T) {
	m, _ := newSteeredManager(t, func(c *Config) { c.PortMin, c.PortMax = 26600, 26607 })
	info, a, b, _, _ := call(t, m)
	if err := m.Reconfigure(Settings{PortMin: 26700, PortMax: 26707, Expire: time.Minute, LatchGrace: time.Second}); err != nil {
		t.Fatal(err)
	}
	a.send(info.LocalPort, []byte("old-range"))
	b.expect([]byte("old-range"), info.LocalPort+2)
	info2, a2, b2, _, _ := call(t, m)
	if info2.LocalPort < 26700 || info2.LocalPort > 26704 {
		t.Fatalf("new channel at %d, outside the new range", info2.LocalPort)
	}
	a2.send(info2.LocalPort, []byte("new-range"))
	b2.expect([]byte("new-range"), info2.LocalPort+2)
}

// TestSteeredShieldEndsWithChannel: a steered port's shield is part of
// its channel. A flood raises it; when the channel ends the kernel's
// drops are in its final counts, and the next channel on the same ports
// hears its own parties (a shield left behind would sink them).
func TestSteeredShieldEndsWithChannel(t *testing.T) {
	m, ends := newSteeredManager(t, func(c *Config) { c.PortMin, c.PortMax = 26600, 26603 })
	info, a, b, _, _ := call(t, m)
	p := info.LocalPort
	intruder := newParty(t)
	for i := range shieldAfter {
		intruder.send(p, fmt.Appendf(nil, "evil-%d", i))
	}
	for deadline := time.Now().Add(5 * time.Second); len(m.sh.shields.list()) != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the flood raised no shield")
		}
	}
	for i := range 3 * shieldAfter { // now dropped in the kernel
		intruder.send(p, fmt.Appendf(nil, "evil-%d", i))
	}
	a.send(p, []byte("marker"))
	b.expect([]byte("marker"), p+2)
	if !m.Kill(info.ID) {
		t.Fatal("kill")
	}
	e := <-ends
	if user, kern := e.Stats.Dropped[DropForeignSource], e.Stats.Dropped[DropForeignSourceKernel]; user+kern != 4*shieldAfter || kern == 0 {
		t.Errorf("ended with %d foreign drops in userspace and %d in the kernel, want %d together, some in the kernel", user, kern, 4*shieldAfter)
	}
	next, _, _, _, _ := call(t, m) // fails if a port still sinks new sources
	if next.LocalPort != p {
		t.Fatalf("next channel at %d, want the same block %d", next.LocalPort, p)
	}
}

// TestSteeredSkipsPortsInUse: a block with a port another program has
// bound is skipped, as with a socket per port; the steering program
// never takes that port, so the program keeps its datagrams.
func TestSteeredSkipsPortsInUse(t *testing.T) {
	m, _ := newSteeredManager(t, func(c *Config) { c.PortMin, c.PortMax = 26600, 26607 })
	other := newPartyOn(t, 26602)
	info, err := m.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	if info.LocalPort != 26604 {
		t.Fatalf("channel at %d, want 26604 (26600-26603 holds another program's port)", info.LocalPort)
	}
	sender := newParty(t)
	sender.send(26602, []byte("mine"))
	other.expect([]byte("mine"), sender.localPort())
	if _, err := m.Allocate(); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("second allocation: %v, want the pool exhausted", err)
	}
}

// newPartyOn is a party at 127.0.0.1:port: another program's socket.
func newPartyOn(t *testing.T, port int) *party {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &party{t: t, conn: c}
}

func (p *party) localPort() int { return p.conn.LocalAddr().(*net.UDPAddr).Port }

// TestSteeredRelayPorts: with steered ports a relay port (TURN's, the
// reachability check's) is a socket of its own that receives, beside a
// steered channel that relays; the two never share a block, and a block
// a relay port gave back serves a channel.
func TestSteeredRelayPorts(t *testing.T) {
	m, _ := newSteeredManager(t, func(c *Config) { c.PortMin, c.PortMax = 26600, 26611 }) // three blocks
	low, err := m.OpenEdgePort("udp4", LowestPort)
	if err != nil {
		t.Fatalf("edge port with steered ports: %v", err)
	}
	t.Cleanup(func() { low.Close() })
	mid, err := m.OpenRelayPort("udp4")
	if err != nil {
		t.Fatalf("relay port with steered ports: %v", err)
	}
	t.Cleanup(func() { mid.Close() })
	info, a, b, _, _ := call(t, m)
	lowPort, midPort := udpPort(low.UDPConn), udpPort(mid.UDPConn)
	if lowPort != 26600 || midPort == info.LocalPort || midPort+info.LocalPort != 26604+26608 {
		t.Fatalf("edge port %d, relay port %d, channel %d: want 26600, then 26604 and 26608", lowPort, midPort, info.LocalPort)
	}
	sender := newParty(t)
	for _, rp := range []*RelayPort{low, mid} {
		port := udpPort(rp.UDPConn)
		sender.send(port, []byte("to-relay-port"))
		buf := make([]byte, 64)
		rp.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, from, err := rp.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != "to-relay-port" || int(from.Port()) != sender.localPort() {
			t.Fatalf("relay port %d read %q from %v: %v", port, buf[:n], from, err)
		}
	}
	a.send(info.LocalPort, []byte("steered"))
	b.expect([]byte("steered"), info.LocalPort+2)
	if _, err := m.Allocate(); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("fourth block: %v, want the pool exhausted", err)
	}
	mid.Close()
	again, err := m.Allocate()
	if err != nil || again.LocalPort != midPort {
		t.Fatalf("after the relay port closed: channel %+v, %v, want port %d", again, err, midPort)
	}
	if n := m.Totals().Stats.Dropped[DropNoChannel]; n != 0 {
		t.Errorf("no_channel %d: a relay port's datagram reached the workers", n)
	}
}

func udpPort(c *net.UDPConn) int { return c.LocalAddr().(*net.UDPAddr).Port }
