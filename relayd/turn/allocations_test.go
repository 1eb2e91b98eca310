package turn

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	pionturn "github.com/pion/turn/v5"
	"mellium.im/xmpp/jid"
)

// TestAllocationsListedAndKilled: a live allocation is listed with its
// requester, the client's address, its relayed address, its permissions
// and its bytes; Kill ends it (pion drops it, the port and reservation
// come back) and it leaves the list.
func TestAllocationsListedAndKilled(t *testing.T) {
	r := newTestRelay(t, netip.Addr{})
	r.reqs.Record("c1", jid.MustParse("alice@example.org/phone"), time.Now().Add(time.Hour))
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	before := time.Now()
	c := r.clientOn(t, conn, "c1", time.Hour)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	relayed := relay.LocalAddr().(*net.UDPAddr).AddrPort()
	p := peer(t)
	if _, err := relay.WriteTo([]byte("to"), p.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readWithin(t, p, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := r.srv.Stats().AllocationsServed; n != 0 {
		t.Fatalf("an allocation that relayed one way only counted as served (%d)", n)
	}
	if _, err := p.WriteTo([]byte("from"), net.UDPAddrFromAddrPort(relayed)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readWithin(t, relay, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// The relay counts a datagram's bytes after its write returns: the
	// echo can overtake the count.
	waitFor(t, "the bytes counted", func() bool {
		l := r.srv.Allocations()
		return len(l) == 1 && l[0].BytesToPeers == 2 && l[0].BytesFromPeers == 4
	})
	if n := r.srv.Stats().AllocationsServed; n != 1 {
		t.Fatalf("allocations served %d after relaying each way, want 1", n)
	}
	list := r.srv.Allocations()
	if len(list) != 1 {
		t.Fatalf("%d allocations listed, want 1: %+v", len(list), list)
	}
	a := list[0]
	if !strings.HasPrefix(a.ID, AllocationIDPrefix) || a.Requester != "alice@example.org" || a.Client != conn.LocalAddr().String() ||
		a.Transport != "udp" || a.Relayed != relayed.String() || a.Peers != 1 || a.BytesToPeers != 2 || a.BytesFromPeers != 4 ||
		a.Created.Before(before) || a.Created.After(time.Now()) {
		t.Fatalf("listed %+v; want alice@example.org from %s over udp, relayed at %s, 1 peer, 2 bytes out, 4 in",
			a, conn.LocalAddr(), relayed)
	}
	if r.srv.Kill("turn-unknown") {
		t.Fatal("Kill of an unknown id reported a live allocation")
	}
	if !r.srv.Kill(a.ID) {
		t.Fatalf("Kill(%s) found no allocation", a.ID)
	}
	waitFor(t, "the killed allocation to end", func() bool {
		return len(r.srv.Allocations()) == 0 && r.gate.Held() == 0 && r.srv.Stats().AllocationsLive == 0 && r.srv.pion.AllocationCount() == 0
	})
	if !r.dp.PermitsPeer(relayed) {
		t.Fatal("a killed allocation's port is still the relay's")
	}
	if r.srv.Kill(a.ID) {
		t.Fatal("Kill of an ended allocation reported it live")
	}
}

// pion's EVEN-PORT probe (a relayed socket asked for with no user id,
// closed at once) takes nothing: no reservation, no port, no allocation
// counted or listed; its port is even.
func TestEvenPortProbeTakesNothing(t *testing.T) {
	r := newTestRelay(t, netip.Addr{})
	conn, addr, err := relayAddresses{r.srv}.AllocatePacketConn(pionturn.AllocateListenerConfig{Network: "udp4"})
	if err != nil {
		t.Fatal(err)
	}
	if port := addr.(*net.UDPAddr).Port; port%2 != 0 {
		t.Fatalf("probe port %d is odd", port)
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	if st := r.srv.Stats(); r.gate.Held() != 0 || st.AllocationsTotal != 0 || len(r.srv.Allocations()) != 0 {
		t.Fatalf("a probe took something: gate holds %d, stats %+v, listed %d", r.gate.Held(), st, len(r.srv.Allocations()))
	}
}
