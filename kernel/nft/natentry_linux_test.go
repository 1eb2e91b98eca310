//go:build !nofastpath

package nft

import (
	"net"
	"net/netip"
	"testing"

	"github.com/jnrelay/jnrelay/kernel/internal/fastpathtest"
)

// TestNATEntryMadeAtInstall: the flowtable variant makes a leg's
// conntrack entry when it installs the leg, not at the leg's first
// datagrams, which would race each other (createEntries). The entry is
// in the zone before any datagram, with A's flow as its original
// direction and B's as its reply; the first datagram of each side, B's
// first, is forwarded through it, and no other entry is made. Relayed in
// userspace before, the leg's peers have zone 0 entries with the relay's
// sockets, which change nothing. (The race itself needs two datagrams
// through prerouting before either is forwarded, as a network card's
// batch does in the arm64 image under qemu: it loses one datagram at
// the hand-over there. This host's veths never batch them.)
func TestNATEntryMadeAtInstall(t *testing.T) {
	tp := newTopo(t)
	tb := tp.open(t, Config{Flowtable: true, noFlowtable: true})
	u := relayedInUserspace(t, tp, fastpathtest.RelayA)
	relayP, relayQ, a, b, toP, toQ, leg := u.relayP, u.relayQ, u.a, u.b, u.toP, u.toQ, u.leg

	if err := tb.Apply(nil, []Leg{leg}); err != nil {
		t.Fatal(err)
	}
	entries, err := tb.flow.ct.dump(ctQuery{zone: tb.flow.zone})
	if err != nil {
		t.Fatal(err)
	}
	want := ctEntry{Zone: tb.flow.zone, Orig: ctTuple{Src: leg.A.Peer, Dst: toP}, Reply: ctTuple{Src: leg.B.Peer, Dst: toQ}}
	if len(entries) != 1 || entries[0].Orig != want.Orig || entries[0].Reply != want.Reply {
		t.Fatalf("zone %d after the install, before any datagram: %+v, want one entry %+v", tb.flow.zone, entries, want)
	}
	id := entries[0].ID

	// B speaks first: its datagram takes the entry's reply direction.
	fastpathtest.Send(t, b, []byte("b->a"), toQ)
	fastpathtest.Expect(t, a, []byte("b->a"), toP)
	fastpathtest.Send(t, a, []byte("a->b!"), toP)
	fastpathtest.Expect(t, b, []byte("a->b!"), toQ)
	fastpathtest.ExpectNone(t, relayP)
	fastpathtest.ExpectNone(t, relayQ)
	entries, err = tb.flow.ct.dump(ctQuery{zone: tb.flow.zone})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].ID != id || entries[0].OrigCount.Packets != 1 || entries[0].ReplyCount.Packets != 1 {
		t.Fatalf("zone %d after a datagram each way: %+v, want the install's entry (id %d) with one packet each way", tb.flow.zone, entries, id)
	}
	cs, err := tb.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if cs[leg.A] != (Counter{Packets: 1, Bytes: 5}) || cs[leg.B] != (Counter{Packets: 1, Bytes: 4}) {
		t.Fatalf("counters %v", cs)
	}

	// Removed, the entry goes: the next datagram reaches the socket.
	if err := tb.Apply([]Leg{leg}, nil); err != nil {
		t.Fatal(err)
	}
	if entries, err := tb.flow.ct.dump(ctQuery{zone: tb.flow.zone}); err != nil || len(entries) != 0 {
		t.Fatalf("zone %d after the leg's removal: %+v %v", tb.flow.zone, entries, err)
	}
	fastpathtest.Send(t, a, []byte("after"), toP)
	fastpathtest.Expect(t, relayP, []byte("after"), leg.A.Peer)
}

// TestNATEntryNotMadeForAnotherAddress: a peer that sends to another of
// the relay's addresses than the one facing it (LocalA) would make an
// entry of its own, whose reply would clash with one made at install and
// lose its every datagram: no entry is made for such a leg, and the
// rules carry it as before, both ways.
func TestNATEntryNotMadeForAnotherAddress(t *testing.T) {
	tp := newTopo(t)
	tb := tp.open(t, Config{Flowtable: true, noFlowtable: true})
	// A reaches the relay at RelayB, the address facing B.
	u := relayedInUserspace(t, tp, fastpathtest.RelayB)
	relayP, relayQ, a, b, toP, toQ, leg := u.relayP, u.relayQ, u.a, u.b, u.toP, u.toQ, u.leg

	if err := tb.Apply(nil, []Leg{leg}); err != nil {
		t.Fatal(err)
	}
	if entries, err := tb.flow.ct.dump(ctQuery{zone: tb.flow.zone}); err != nil || len(entries) != 0 {
		t.Fatalf("zone %d after the install: %+v %v, want no entry", tb.flow.zone, entries, err)
	}
	for range 2 {
		fastpathtest.Send(t, a, []byte("a->b"), toP)
		fastpathtest.Expect(t, b, []byte("a->b"), toQ)
		fastpathtest.Send(t, b, []byte("b->a!"), toQ)
		fastpathtest.Expect(t, a, []byte("b->a!"), toP)
	}
	fastpathtest.ExpectNone(t, relayP)
	fastpathtest.ExpectNone(t, relayQ)
}

// userspaceLeg is a leg as relayd's userspace part has it before the
// install: the relay's sockets at ports 28000 (P, A's side) and 28002 (Q),
// and each peer's first datagram received there.
type userspaceLeg struct {
	relayP, relayQ, a, b *net.UDPConn
	toP, toQ             netip.AddrPort // where A and B send
	leg                  Leg
}

// relayedInUserspace makes a userspaceLeg whose A sends to the relay at
// aTo (B at RelayB, the address facing it).
func relayedInUserspace(t *testing.T, tp *topo, aTo netip.Addr) userspaceLeg {
	t.Helper()
	u := userspaceLeg{
		relayP: fastpathtest.UDP(t, tp.R, netip.AddrPortFrom(netip.IPv4Unspecified(), 28000)),
		relayQ: fastpathtest.UDP(t, tp.R, netip.AddrPortFrom(netip.IPv4Unspecified(), 28002)),
		a:      fastpathtest.UDP(t, tp.A, netip.AddrPortFrom(fastpathtest.PeerA, 5000)),
		b:      fastpathtest.UDP(t, tp.B, netip.AddrPortFrom(fastpathtest.PeerB, 6000)),
		toP:    netip.AddrPortFrom(aTo, 28000),
		toQ:    netip.AddrPortFrom(fastpathtest.RelayB, 28002),
	}
	u.leg = Leg{A: Flow{Peer: fastpathtest.Addr(u.a), Port: 28000}, B: Flow{Peer: fastpathtest.Addr(u.b), Port: 28002},
		LocalA: fastpathtest.RelayA, LocalB: fastpathtest.RelayB}
	// The userspace part: each peer's datagram reaches the relay's socket.
	fastpathtest.Send(t, u.a, []byte("a"), u.toP)
	fastpathtest.Expect(t, u.relayP, []byte("a"), u.leg.A.Peer)
	fastpathtest.Send(t, u.b, []byte("b"), u.toQ)
	fastpathtest.Expect(t, u.relayQ, []byte("b"), u.leg.B.Peer)
	return u
}
