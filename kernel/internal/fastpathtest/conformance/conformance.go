// Package conformance is the behaviour both fast paths (kernel/nft,
// kernel/tcfwd) must show, run by each one's tests in the network of
// package fastpathtest: the same legs, the same datagrams, the same
// counters.
package conformance

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel/internal/fastpathtest"
	"github.com/jnrelay/jnrelay/kernel/nft"
)

// Table is a fast path.
type Table interface {
	Apply(remove, add []nft.Leg) error
	Counters() (map[nft.Flow]nft.Counter, error)
	Close() error
}

// Forwarding checks f, opened in tp's relay namespace for listen: before
// a leg is installed everything reaches the relay's sockets; installed,
// both directions are forwarded with the relay's addresses and ports and
// correct checksums (zero ones stay zero), and only the latched peers'
// datagrams of at most maxPayload bytes, unfragmented, are; the counters
// are exact; a replaced and a removed leg take effect on the next
// datagram; after Close everything reaches the sockets again. It closes
// f. zeroSumToSocket says that f leaves datagrams without a UDP checksum
// to the relay's socket instead of forwarding them.
func Forwarding(t *testing.T, tp *fastpathtest.Topo, f Table, listen netip.Addr, zeroSumToSocket bool) {
	const maxPayload = nft.MaxPayload
	t.Helper()
	counters := func() map[nft.Flow]nft.Counter {
		var cs map[nft.Flow]nft.Counter
		fastpathtest.In(t, tp.R, func() (err error) { cs, err = f.Counters(); return err })
		return cs
	}
	// The relay's sockets: what the kernel does not forward arrives here.
	relayP := fastpathtest.UDP(t, tp.R, netip.AddrPortFrom(netip.IPv4Unspecified(), 28000))
	relayQ := fastpathtest.UDP(t, tp.R, netip.AddrPortFrom(netip.IPv4Unspecified(), 28002))
	a := fastpathtest.UDP(t, tp.A, netip.AddrPortFrom(fastpathtest.PeerA, 5000))
	foreign := fastpathtest.UDP(t, tp.A, netip.AddrPortFrom(fastpathtest.PeerA, 5001))
	b := fastpathtest.UDP(t, tp.B, netip.AddrPortFrom(fastpathtest.PeerB, 6000))
	// With listen=fastpathtest.RelayA, B's side is reached at fastpathtest.RelayA too (one address,
	// as a relay's channel result names one host).
	toP, toQ := netip.AddrPortFrom(fastpathtest.RelayA, 28000), netip.AddrPortFrom(fastpathtest.RelayA, 28002)
	leg := nft.Leg{A: nft.Flow{Peer: fastpathtest.Addr(a), Port: 28000}, B: nft.Flow{Peer: fastpathtest.Addr(b), Port: 28002},
		LocalA: fastpathtest.RelayA, LocalB: fastpathtest.RelayB}
	if listen.IsUnspecified() {
		toQ = netip.AddrPortFrom(fastpathtest.RelayB, 28002)
	} else {
		leg.LocalB = fastpathtest.RelayA
	}

	// Before offload: everything reaches the relay's sockets.
	fastpathtest.Send(t, a, []byte("before"), toP)
	fastpathtest.Expect(t, relayP, []byte("before"), leg.A.Peer)

	if err := f.Apply(nil, []nft.Leg{leg}); err != nil {
		t.Fatal(err)
	}
	fastpathtest.Send(t, a, []byte("a->b"), toP)
	fastpathtest.Expect(t, b, []byte("a->b"), netip.AddrPortFrom(leg.LocalB, 28002))
	fastpathtest.Send(t, b, []byte("b->a!"), toQ)
	fastpathtest.Expect(t, a, []byte("b->a!"), netip.AddrPortFrom(leg.LocalA, 28000))
	fastpathtest.ExpectNone(t, relayP)
	fastpathtest.ExpectNone(t, relayQ)

	// Another source port of the same host, an oversize datagram of the
	// latched peer and a fragmented one reach the relay's socket and
	// nobody else.
	fastpathtest.Send(t, foreign, []byte("intruder"), toP)
	fastpathtest.Expect(t, relayP, []byte("intruder"), fastpathtest.Addr(foreign))
	big := make([]byte, maxPayload+1)
	fastpathtest.Send(t, a, big, toP)
	fastpathtest.Expect(t, relayP, big, leg.A.Peer)
	fragmented := make([]byte, 1700)
	fastpathtest.Send(t, a, fragmented, toP)
	fastpathtest.Expect(t, relayP, fragmented, leg.A.Peer)
	full := make([]byte, maxPayload)
	for i := range full {
		full[i] = byte(i * 7)
	}
	fastpathtest.Send(t, a, full, toP)
	fastpathtest.Expect(t, b, full, netip.AddrPortFrom(leg.LocalB, 28002))
	fastpathtest.ExpectNone(t, b)

	// A datagram without a UDP checksum (0, allowed over IPv4) is never
	// lost: forwarded, it keeps none (a rewritten one with a wrong sum
	// would be dropped by b); or, where the implementation cannot rewrite
	// it (zeroSumToSocket), it reaches the relay's socket untouched.
	relayR := fastpathtest.UDP(t, tp.R, netip.AddrPortFrom(netip.IPv4Unspecified(), 28004))
	noSum := fastpathtest.UDP(t, tp.A, netip.AddrPortFrom(fastpathtest.PeerA, 5002))
	rc, err := noSum.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1) }); err != nil {
		t.Fatal(err)
	}
	noSumLeg := nft.Leg{A: nft.Flow{Peer: fastpathtest.Addr(noSum), Port: 28004}, B: nft.Flow{Peer: netip.AddrPortFrom(fastpathtest.PeerB, 6000), Port: 28006},
		LocalA: leg.LocalA, LocalB: leg.LocalB}
	if err := f.Apply(nil, []nft.Leg{noSumLeg}); err != nil {
		t.Fatal(err)
	}
	fastpathtest.Send(t, noSum, []byte("no checksum"), netip.AddrPortFrom(fastpathtest.RelayA, 28004))
	noSumForwarded := nft.Counter{Packets: 1, Bytes: 11}
	if zeroSumToSocket {
		fastpathtest.Expect(t, relayR, []byte("no checksum"), noSumLeg.A.Peer)
		noSumForwarded = nft.Counter{}
	} else {
		fastpathtest.Expect(t, b, []byte("no checksum"), netip.AddrPortFrom(leg.LocalB, 28006))
	}
	fastpathtest.ExpectNone(t, b)

	cs := counters()
	want := map[nft.Flow]nft.Counter{leg.A: {Packets: 2, Bytes: 4 + maxPayload}, leg.B: {Packets: 1, Bytes: 5},
		noSumLeg.A: noSumForwarded, noSumLeg.B: {}}
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
	moved.A.Peer = fastpathtest.Addr(foreign)
	if err := f.Apply([]nft.Leg{leg}, []nft.Leg{moved}); err != nil {
		t.Fatal(err)
	}
	fastpathtest.Send(t, a, []byte("old"), toP)
	fastpathtest.Expect(t, relayP, []byte("old"), leg.A.Peer)
	fastpathtest.Send(t, foreign, []byte("new"), toP)
	fastpathtest.Expect(t, b, []byte("new"), netip.AddrPortFrom(leg.LocalB, 28002))
	fastpathtest.Send(t, b, []byte("back"), toQ)
	fastpathtest.Expect(t, foreign, []byte("back"), netip.AddrPortFrom(leg.LocalA, 28000))
	if err := f.Apply([]nft.Leg{moved, noSumLeg}, nil); err != nil {
		t.Fatal(err)
	}
	fastpathtest.Send(t, foreign, []byte("gone"), toP)
	fastpathtest.Expect(t, relayP, []byte("gone"), moved.A.Peer)
	if cs := counters(); len(cs) != 0 {
		t.Fatalf("counters after removal: %v", cs)
	}

	// Close: every leg returns to the relay's sockets.
	if err := f.Apply(nil, []nft.Leg{leg}); err != nil {
		t.Fatal(err)
	}
	fastpathtest.Send(t, a, []byte("offloaded again"), toP)
	fastpathtest.Expect(t, b, []byte("offloaded again"), netip.AddrPortFrom(leg.LocalB, 28002))
	fastpathtest.In(t, tp.R, f.Close)
	fastpathtest.Send(t, a, []byte("closed"), toP)
	fastpathtest.Expect(t, relayP, []byte("closed"), leg.A.Peer)
}

// OneArm checks f, opened in the relay namespace of fastpathtest's
// one-armed network (NewOneArm) for listen: the relay of a donor, whose
// every relayed datagram leaves by the interface it arrived on, toward
// the router's MAC address. The first datagrams of each direction find
// no neighbour entry for the router (the table is flushed after the
// before-offload datagram, whose ARP exchange filled it), the next ones
// find it; all are forwarded with exact counters. It closes f.
func OneArm(t *testing.T, tp *fastpathtest.Topo, f Table, listen netip.Addr) {
	t.Helper()
	relayP := fastpathtest.UDP(t, tp.R, netip.AddrPortFrom(listen, 28000))
	relayQ := fastpathtest.UDP(t, tp.R, netip.AddrPortFrom(listen, 28002))
	a := fastpathtest.UDP(t, tp.A, netip.AddrPortFrom(fastpathtest.PeerA, 5000))
	b := fastpathtest.UDP(t, tp.B, netip.AddrPortFrom(fastpathtest.PeerB, 6000))
	relay := fastpathtest.OneArmRelay
	toP, toQ := netip.AddrPortFrom(relay, 28000), netip.AddrPortFrom(relay, 28002)
	leg := nft.Leg{A: nft.Flow{Peer: fastpathtest.Addr(a), Port: 28000}, B: nft.Flow{Peer: fastpathtest.Addr(b), Port: 28002},
		LocalA: relay, LocalB: relay}

	fastpathtest.Send(t, a, []byte("before"), toP)
	fastpathtest.Expect(t, relayP, []byte("before"), leg.A.Peer)
	if err := f.Apply(nil, []nft.Leg{leg}); err != nil {
		t.Fatal(err)
	}
	fastpathtest.Run(t, "ip", "-n", tp.R, "neigh", "flush", "all")
	for round := range 2 {
		fastpathtest.Send(t, a, []byte("a->b"), toP)
		fastpathtest.Expect(t, b, []byte("a->b"), toQ)
		fastpathtest.Send(t, b, []byte("b->a!"), toQ)
		fastpathtest.Expect(t, a, []byte("b->a!"), toP)
		var cs map[nft.Flow]nft.Counter
		fastpathtest.In(t, tp.R, func() (err error) { cs, err = f.Counters(); return err })
		n := uint64(round + 1)
		want := map[nft.Flow]nft.Counter{leg.A: {Packets: n, Bytes: 4 * n}, leg.B: {Packets: n, Bytes: 5 * n}}
		if len(cs) != len(want) || cs[leg.A] != want[leg.A] || cs[leg.B] != want[leg.B] {
			t.Fatalf("round %d: counters %v, want %v", round, cs, want)
		}
	}
	fastpathtest.ExpectNone(t, relayP)
	fastpathtest.ExpectNone(t, relayQ)
	fastpathtest.In(t, tp.R, f.Close)
	fastpathtest.Send(t, a, []byte("closed"), toP)
	fastpathtest.Expect(t, relayP, []byte("closed"), leg.A.Peer)
}

// L3Device checks f, opened in the relay namespace of fastpathtest's
// NewL3 network for an unspecified listen address: a router whose uplink
// is an L3 device (PPPoE's ppp0, WireGuard; a tun device, with the test
// beyond it). Datagrams that arrive there without an Ethernet header are
// forwarded back out over it (both peers on the Internet) and to a LAN
// peer over Ethernet, and the LAN peer's out over it; checksums are
// verified on the far side of each, the counters are exact. It closes f.
func L3Device(t *testing.T, tp *fastpathtest.Topo, tun *fastpathtest.Tun, f Table) {
	t.Helper()
	wan := fastpathtest.OneArmRelay
	w1, w2 := netip.MustParseAddrPort("198.51.100.2:6000"), netip.MustParseAddrPort("198.51.100.3:7000")
	relayP := fastpathtest.UDP(t, tp.R, netip.AddrPortFrom(netip.IPv4Unspecified(), 28000))
	a := fastpathtest.UDP(t, tp.A, netip.AddrPortFrom(fastpathtest.PeerA, 5000))

	// Not offloaded: to the relay's socket.
	tun.Write(t, fastpathtest.IPv4UDP(w1, netip.AddrPortFrom(wan, 28000), []byte("before")))
	fastpathtest.Expect(t, relayP, []byte("before"), w1)

	internet := nft.Leg{A: nft.Flow{Peer: w1, Port: 28000}, B: nft.Flow{Peer: w2, Port: 28002}, LocalA: wan, LocalB: wan}
	lan := nft.Leg{A: nft.Flow{Peer: fastpathtest.Addr(a), Port: 28004}, B: nft.Flow{Peer: w1, Port: 28006}, LocalA: fastpathtest.RelayA, LocalB: wan}
	if err := f.Apply(nil, []nft.Leg{internet, lan}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the first ones find no neighbour entry yet
		tun.Write(t, fastpathtest.IPv4UDP(w1, netip.AddrPortFrom(wan, 28000), []byte("w1->w2")))
		tun.Expect(t, []byte("w1->w2"), netip.AddrPortFrom(wan, 28002), w2)
		tun.Write(t, fastpathtest.IPv4UDP(w2, netip.AddrPortFrom(wan, 28002), []byte("w2->w1!")))
		tun.Expect(t, []byte("w2->w1!"), netip.AddrPortFrom(wan, 28000), w1)
		fastpathtest.Send(t, a, []byte("lan->wan"), netip.AddrPortFrom(fastpathtest.RelayA, 28004))
		tun.Expect(t, []byte("lan->wan"), netip.AddrPortFrom(wan, 28006), w1)
		tun.Write(t, fastpathtest.IPv4UDP(w1, netip.AddrPortFrom(wan, 28006), []byte("wan->lan!!")))
		fastpathtest.Expect(t, a, []byte("wan->lan!!"), netip.AddrPortFrom(fastpathtest.RelayA, 28004))
	}
	fastpathtest.ExpectNone(t, relayP)
	tun.ExpectNone(t)
	var cs map[nft.Flow]nft.Counter
	fastpathtest.In(t, tp.R, func() (err error) { cs, err = f.Counters(); return err })
	want := map[nft.Flow]nft.Counter{internet.A: {Packets: 2, Bytes: 12}, internet.B: {Packets: 2, Bytes: 14},
		lan.A: {Packets: 2, Bytes: 16}, lan.B: {Packets: 2, Bytes: 20}}
	if len(cs) != len(want) {
		t.Fatalf("counters %v, want %v", cs, want)
	}
	for fl, c := range want {
		if cs[fl] != c {
			t.Fatalf("counters %v, want %v", cs, want)
		}
	}
	fastpathtest.In(t, tp.R, f.Close)
	tun.Write(t, fastpathtest.IPv4UDP(w1, netip.AddrPortFrom(wan, 28000), []byte("closed")))
	fastpathtest.Expect(t, relayP, []byte("closed"), w1)
}
