package tcfwd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel/internal/fastpathtest"
	"github.com/jnrelay/jnrelay/kernel/internal/fastpathtest/conformance"

	"github.com/jnrelay/jnrelay/kernel/nft"
)

// The tests run in fastpathtest's network: peers A and B, relay R.
type topo struct{ *fastpathtest.Topo }

func newTopo(t *testing.T) *topo {
	fastpathtest.SkipWithoutBPF(t)
	return &topo{fastpathtest.New(t, "jntc")}
}

func (tp *topo) open(t *testing.T, cfg Config) *Forwarder {
	t.Helper()
	var (
		f       *Forwarder
		openErr error
	)
	fastpathtest.In(t, tp.R, func() error { f, openErr = Open(cfg); return nil })
	if openErr != nil {
		t.Fatal(openErr)
	}
	t.Cleanup(func() { fastpathtest.In(t, tp.R, f.Close) })
	return f
}

func TestForwarding(t *testing.T) {
	for _, attach := range []Attach{AttachTCX, AttachClsact} {
		for _, listen := range []netip.Addr{netip.IPv4Unspecified(), fastpathtest.RelayA} {
			t.Run(fmt.Sprintf("%s/listen=%s", attach, listen), func(t *testing.T) { testForwarding(t, attach, listen) })
		}
	}
}

func testForwarding(t *testing.T, attach Attach, listen netip.Addr) {
	tp := newTopo(t)
	conformance.Forwarding(t, tp.Topo, tp.open(t, Config{Listen: listen, MaxFlows: 16, Attach: attach}), listen, false)
}

// TestOneArm: a donor's relay, one interface, both peers beyond a router.
func TestOneArm(t *testing.T) {
	for _, attach := range []Attach{AttachTCX, AttachClsact} {
		for _, listen := range []netip.Addr{netip.IPv4Unspecified(), fastpathtest.OneArmRelay} {
			t.Run(fmt.Sprintf("%s/listen=%s", attach, listen), func(t *testing.T) {
				fastpathtest.SkipWithoutBPF(t)
				tp := &topo{fastpathtest.NewOneArm(t, "jntc1")}
				conformance.OneArm(t, tp.Topo, tp.open(t, Config{Listen: listen, MaxFlows: 16, Attach: attach}), listen)
			})
		}
	}
}

// TestHandover: a leg installed while both peers stream loses nothing
// and duplicates nothing (kernel/internal/fastpathtest/conformance).
func TestHandover(t *testing.T) {
	fastpathtest.SkipWithoutBPF(t)
	tp := &topo{fastpathtest.NewOneArmNAPI(t, "jntcho")}
	r := fastpathtest.OneArmRelay
	conformance.Handover(t, tp.Topo, tp.open(t, Config{MaxFlows: 16}), r, r, conformance.HandoverRounds())
}

// TestVLANTaggedFrame: a frame that arrived 802.1Q-tagged is left to the
// stack at the device it arrived on: the VLAN device the kernel hands it
// to next runs the program itself (this test's kernel may have no 802.1Q
// devices at all; then the stack drops the frame). The program on ra sees
// it untagged in its data, with the tag in the skb's metadata; the same
// frame untagged is forwarded (the control), the tagged one neither
// forwarded nor counted.
func TestVLANTaggedFrame(t *testing.T) {
	tp := newTopo(t)
	f := tp.open(t, Config{MaxFlows: 16})
	a := fastpathtest.UDP(t, tp.A, netip.AddrPortFrom(fastpathtest.PeerA, 5000))
	b := fastpathtest.UDP(t, tp.B, netip.AddrPortFrom(fastpathtest.PeerB, 6000))
	leg := nft.Leg{A: nft.Flow{Peer: fastpathtest.Addr(a), Port: 28000}, B: nft.Flow{Peer: fastpathtest.Addr(b), Port: 28002}, LocalA: fastpathtest.RelayA, LocalB: fastpathtest.RelayB}
	if err := f.Apply(nil, []nft.Leg{leg}); err != nil {
		t.Fatal(err)
	}
	var relayMAC net.HardwareAddr
	fastpathtest.In(t, tp.R, func() error {
		ifc, err := net.InterfaceByName("ra")
		if err == nil {
			relayMAC = ifc.HardwareAddr
		}
		return err
	})
	var (
		fd      int
		ifindex int
		peerMAC net.HardwareAddr
	)
	fastpathtest.In(t, tp.A, func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		ifindex, peerMAC = ifc.Index, ifc.HardwareAddr
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	t.Cleanup(func() { unix.Close(fd) })
	send := func(vlan uint16, payload string) {
		t.Helper()
		frame := append([]byte{}, relayMAC...)
		frame = append(frame, peerMAC...)
		if vlan != 0 {
			frame = binary.BigEndian.AppendUint16(frame, unix.ETH_P_8021Q)
			frame = binary.BigEndian.AppendUint16(frame, vlan)
		}
		frame = binary.BigEndian.AppendUint16(frame, unix.ETH_P_IP)
		frame = append(frame, fastpathtest.IPv4UDP(leg.A.Peer, netip.AddrPortFrom(fastpathtest.RelayA, leg.A.Port), []byte(payload))...)
		to := &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6}
		copy(to.Addr[:], relayMAC)
		if err := unix.Sendto(fd, frame, 0, to); err != nil {
			t.Fatal(err)
		}
	}
	counted := func() nft.Counter {
		var cs map[nft.Flow]nft.Counter
		fastpathtest.In(t, tp.R, func() (err error) { cs, err = f.Counters(); return err })
		return cs[leg.A]
	}
	send(0, "untagged")
	fastpathtest.Expect(t, b, []byte("untagged"), netip.AddrPortFrom(fastpathtest.RelayB, 28002))
	if c := counted(); c != (nft.Counter{Packets: 1, Bytes: 8}) {
		t.Fatalf("untagged frame: counter %+v, want 1 packet of 8 bytes", c)
	}
	send(7, "tagged")
	fastpathtest.ExpectNone(t, b)
	if c := counted(); c != (nft.Counter{Packets: 1, Bytes: 8}) {
		t.Fatalf("a tagged frame was taken by the program: counter %+v", c)
	}
}

// TestL3Device: a router whose uplink is an L3 device (PPPoE's ppp0,
// WireGuard; a tun device here, the test beyond it): datagrams that come
// in there without an Ethernet header are forwarded back out over it
// (both peers on the Internet) and to a LAN peer over Ethernet, and the
// LAN peer's out over it; checksums verified on the far side of each.
func TestL3Device(t *testing.T) {
	for _, attach := range []Attach{AttachTCX, AttachClsact} {
		t.Run(string(attach), func(t *testing.T) { testL3Device(t, attach) })
	}
}

func testL3Device(t *testing.T, attach Attach) {
	fastpathtest.SkipWithoutBPF(t)
	net3, tun := fastpathtest.NewL3(t, "jntc3")
	tp := &topo{net3}
	conformance.L3Device(t, net3, tun, tp.open(t, Config{MaxFlows: 16, Attach: attach}))
}

// TestForwardingOffUnderneath: net.ipv4.ip_forward turned off while a leg
// is offloaded makes the program's route lookup decline, and userspace
// gets the datagrams (nftables' rewritten ones would be dropped instead).
func TestForwardingOffUnderneath(t *testing.T) {
	tp := newTopo(t)
	f := tp.open(t, Config{MaxFlows: 16})
	relayP := fastpathtest.UDP(t, tp.R, netip.AddrPortFrom(netip.IPv4Unspecified(), 28000))
	a := fastpathtest.UDP(t, tp.A, netip.AddrPortFrom(fastpathtest.PeerA, 5000))
	b := fastpathtest.UDP(t, tp.B, netip.AddrPortFrom(fastpathtest.PeerB, 6000))
	leg := nft.Leg{A: nft.Flow{Peer: fastpathtest.Addr(a), Port: 28000}, B: nft.Flow{Peer: fastpathtest.Addr(b), Port: 28002}, LocalA: fastpathtest.RelayA, LocalB: fastpathtest.RelayB}
	if err := f.Apply(nil, []nft.Leg{leg}); err != nil {
		t.Fatal(err)
	}
	toP := netip.AddrPortFrom(fastpathtest.RelayA, 28000)
	fastpathtest.Send(t, a, []byte("forwarded"), toP)
	fastpathtest.Expect(t, b, []byte("forwarded"), netip.AddrPortFrom(fastpathtest.RelayB, 28002))
	tp.Forwarding(t, false)
	fastpathtest.Send(t, a, []byte("no forwarding"), toP)
	fastpathtest.Expect(t, relayP, []byte("no forwarding"), leg.A.Peer)
	fastpathtest.ExpectNone(t, b)
}

func TestConflictAndInvalid(t *testing.T) {
	tp := newTopo(t)
	f := tp.open(t, Config{MaxFlows: 16})
	leg := nft.Leg{A: nft.Flow{Peer: netip.AddrPortFrom(fastpathtest.PeerA, 5000), Port: 28000}, B: nft.Flow{Peer: netip.AddrPortFrom(fastpathtest.PeerB, 6000), Port: 28002},
		LocalA: fastpathtest.RelayA, LocalB: fastpathtest.RelayB}
	if err := f.Apply(nil, []nft.Leg{leg}); err != nil {
		t.Fatal(err)
	}
	// The same flow on another leg.
	other := leg
	other.B.Port = 28006
	ok := leg
	ok.A.Port, ok.B.Port, ok.A.Peer = 28008, 28010, netip.AddrPortFrom(fastpathtest.PeerA, 5002)
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
	fastpathtest.In(t, tp.R, func() (err error) { cs, err = f.Counters(); return err })
	if len(cs) != 4 {
		t.Fatalf("counters %v, want the 4 flows of two legs", cs)
	}
	// The map is full at MaxFlows: the kernel refuses and the call
	// changes nothing.
	var many []nft.Leg
	for i := range 7 {
		many = append(many, nft.Leg{A: nft.Flow{Peer: netip.AddrPortFrom(fastpathtest.PeerA, uint16(7000+i)), Port: uint16(29000 + 2*i)},
			B: nft.Flow{Peer: netip.AddrPortFrom(fastpathtest.PeerB, uint16(7000+i)), Port: uint16(29001 + 2*i)}, LocalA: fastpathtest.RelayA, LocalB: fastpathtest.RelayB})
	}
	if err := f.Apply(nil, many); !errors.Is(err, syscall.E2BIG) {
		t.Fatalf("flows beyond MaxFlows: %v, want E2BIG", err)
	}
	fastpathtest.In(t, tp.R, func() (err error) { cs, err = f.Counters(); return err })
	if len(cs) != 4 {
		t.Fatalf("after the refused call: %d flows, want 4", len(cs))
	}
}

// TestCountersManyBatches: more flows than one batched map read returns
// (batchSize) are all read, each with its own counter.
func TestCountersManyBatches(t *testing.T) {
	tp := newTopo(t)
	const legs = batchSize + batchSize/2 // 2 flows a leg: three batches
	f := tp.open(t, Config{MaxFlows: 2 * legs})
	a := fastpathtest.UDP(t, tp.A, netip.AddrPortFrom(fastpathtest.PeerA, 5000))
	b := fastpathtest.UDP(t, tp.B, netip.AddrPortFrom(fastpathtest.PeerB, 6000))
	all := make([]nft.Leg, 0, legs)
	for i := range legs {
		all = append(all, nft.Leg{A: nft.Flow{Peer: netip.AddrPortFrom(fastpathtest.PeerA, uint16(10000+i)), Port: uint16(20000 + 2*i)},
			B: nft.Flow{Peer: netip.AddrPortFrom(fastpathtest.PeerB, uint16(10000+i)), Port: uint16(20001 + 2*i)}, LocalA: fastpathtest.RelayA, LocalB: fastpathtest.RelayB})
	}
	live := nft.Leg{A: nft.Flow{Peer: fastpathtest.Addr(a), Port: 28000}, B: nft.Flow{Peer: fastpathtest.Addr(b), Port: 28002}, LocalA: fastpathtest.RelayA, LocalB: fastpathtest.RelayB}
	all[legs/2] = live // in the middle of the map's iteration, whatever its order
	if err := f.Apply(nil, all); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		fastpathtest.Send(t, a, []byte("counted"), netip.AddrPortFrom(fastpathtest.RelayA, 28000))
		fastpathtest.Expect(t, b, []byte("counted"), netip.AddrPortFrom(fastpathtest.RelayB, 28002))
	}
	var cs map[nft.Flow]nft.Counter
	fastpathtest.In(t, tp.R, func() (err error) { cs, err = f.Counters(); return err })
	if len(cs) != 2*legs {
		t.Fatalf("%d counters, want %d", len(cs), 2*legs)
	}
	for _, l := range all {
		want := [2]nft.Counter{}
		if l == live {
			want[0] = nft.Counter{Packets: 3, Bytes: 21}
		}
		if got := [2]nft.Counter{cs[l.A], cs[l.B]}; got != want {
			t.Fatalf("leg %v: counters %v, want %v", l, got, want)
		}
	}
}

// TestStaleFilter: a clsact filter left by a run that never closed is
// replaced at the next Open, and Close removes it. (TCX links need no
// such care: the kernel drops them with the process's descriptors.)
func TestStaleFilter(t *testing.T) {
	tp := newTopo(t)
	var stale *Forwarder
	var err error
	fastpathtest.In(t, tp.R, func() error { stale, err = Open(Config{Attach: AttachClsact}); return nil })
	if err != nil {
		t.Fatal(err)
	}
	stale.closeFDs() // as if the process died: the filters stay, holding the program
	filters := func() string {
		out, err := exec.Command("ip", "netns", "exec", tp.R, "tc", "filter", "show", "dev", "ra", "ingress").CombinedOutput()
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
	fastpathtest.In(t, tp.R, f.Close)
	if got := filters(); strings.Contains(got, "jnrelay_fwd") {
		t.Fatalf("filter after Close:\n%s", got)
	}
}

func TestUnavailable(t *testing.T) {
	tp := newTopo(t)
	tp.Forwarding(t, false)
	var err error
	fastpathtest.In(t, tp.R, func() error { _, err = Open(Config{}); return nil })
	var ue *nft.UnavailableError
	if !errors.As(err, &ue) || ue.Reason != "ip_forward_off" {
		t.Fatalf("Open with forwarding off: %v", err)
	}
}

// TestProgramShape checks the assembler's output without a kernel: every
// jump lands inside the program, and both exits are reached by the
// expected paths.
func TestProgramShape(t *testing.T) {
	for _, listen := range []netip.Addr{netip.IPv4Unspecified(), fastpathtest.RelayA} {
		for _, l3 := range []bool{false, true} {
			p := program(listen, l3, 3, 4, 5)
			if last := p[len(p)-1]; last.Code != 0x95 {
				t.Fatalf("program ends with opcode %#x, not exit", last.Code)
			}
			for i, in := range p {
				if in.Code&0x07 == 0x05 && in.Code != 0x85 && in.Code != 0x95 { // BPF_JMP, not call/exit
					if to := i + 1 + int(in.Off); to <= i || to >= len(p) {
						t.Errorf("listen %s, l3 %v: jump at %d lands on %d (program of %d)", listen, l3, i, to, len(p))
					}
				}
			}
		}
	}
}

// TestBridgedUplink: a relay whose uplink is a bridge, both peers beyond
// the router on its one port, br_netfilter passing the bridge's frames
// through the IPv4 hooks (where the nftables fast path refuses to open):
// the program runs at the port's ingress, before the bridge, and forwards
// everything.
func TestBridgedUplink(t *testing.T) {
	fastpathtest.SkipWithoutBPF(t)
	tp := &topo{fastpathtest.NewOneArmBridged(t, "jntcbr", true)}
	l := netip.IPv4Unspecified()
	conformance.OneArm(t, tp.Topo, tp.open(t, Config{Listen: l, MaxFlows: 16}), l)
}
