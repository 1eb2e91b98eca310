package turn

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	pionturn "github.com/pion/turn/v5"
	"golang.org/x/time/rate"

	"github.com/jnrelay/jnrelay/relayd/admission"
	"github.com/jnrelay/jnrelay/relayd/channel"
)

var (
	lo4 = netip.MustParseAddr("127.0.0.1")
	lo6 = netip.IPv6Loopback()
)

// newDualRelay runs a data plane and a TURN server on unspecified
// addresses (both families: they bind the wildcard, the test's traffic
// stays on loopback) advertising public4 and public6 (invalid: none).
func newDualRelay(t *testing.T, public4, public6 netip.Addr) *testRelay {
	t.Helper()
	dp, err := channel.New(channel.Config{Listen: netip.IPv6Unspecified(), Settings: channel.Settings{PortMin: 29200, PortMax: 29299,
		Expire: time.Minute, LatchGrace: 5 * time.Second},
		PublicAddr: func() netip.Addr { return public4 }, PublicAddr6: func() netip.Addr { return public6 }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dp.Close)
	r := &testRelay{dp: dp, gate: admission.New(admission.Config{Draining: dp.Draining}), reqs: NewRequesters(0)}
	r.srv, err = New(Config{Listen: netip.AddrPortFrom(netip.IPv4Unspecified(), 0), Realm: "jnrelay", Secret: testSecret,
		PublicAddr: func() netip.Addr { return public4 }, PublicAddr6: func() netip.Addr { return public6 },
		DataPlane: dp, Gate: r.gate, Requesters: r.reqs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.srv.Close() })
	return r
}

// clientOver logs in over loopback of family from (lo4 or lo6), asking
// for relayed addresses of family (0: pion's client infers it from its
// socket).
func (r *testRelay) clientOver(t *testing.T, from netip.Addr, family pionturn.RequestedAddressFamily) *pionturn.Client {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	addr := netip.AddrPortFrom(from, r.srv.Addr().Port()).String()
	return newClient(t, conn, addr, "v6test", time.Hour, func(c *pionturn.ClientConfig) { c.RequestedAddressFamily = family })
}

// peerAt is a UDP socket the test owns at a loopback address.
func peerAt(t *testing.T, a netip.Addr) *net.UDPConn {
	t.Helper()
	p, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// exchange relays a datagram each way between the allocation and p.
func exchange(t *testing.T, relay net.PacketConn, p *net.UDPConn) {
	t.Helper()
	relayed := relay.LocalAddr().(*net.UDPAddr).AddrPort()
	peerAddr := p.LocalAddr().(*net.UDPAddr).AddrPort()
	for i := range 3 {
		msg := []byte{'c', byte(i)}
		if _, err := relay.WriteTo(msg, net.UDPAddrFromAddrPort(peerAddr)); err != nil {
			t.Fatal(err)
		}
		got, from, err := readWithin(t, p, 5*time.Second)
		if err != nil || string(got) != string(msg) || from.(*net.UDPAddr).AddrPort() != relayed {
			t.Fatalf("peer got %q from %v (%v), want %q from %s", got, from, err, msg, relayed)
		}
		reply := []byte{'p', byte(i)}
		if _, err := p.WriteToUDPAddrPort(reply, relayed); err != nil {
			t.Fatal(err)
		}
		got, from, err = readWithin(t, relay, 5*time.Second)
		if err != nil || string(got) != string(reply) || from.(*net.UDPAddr).AddrPort() != peerAddr {
			t.Fatalf("client got %q from %v (%v), want %q from %s", got, from, err, reply, peerAddr)
		}
	}
}

// TestAllocationFamilies: a client over either family gets a relayed
// address of the family it asks for — IPv4 when it names none (pion's
// client then sends no REQUESTED-ADDRESS-FAMILY) — at the public address
// of that family, and reaches a peer of that family: an IPv6 client
// reaches IPv4 peers through the relay, and the other way round.
func TestAllocationFamilies(t *testing.T) {
	r := newDualRelay(t, lo4, lo6)
	for _, tc := range []struct {
		name   string
		over   netip.Addr
		family pionturn.RequestedAddressFamily
		want   netip.Addr
	}{
		{"v6 client, v6 relayed", lo6, pionturn.RequestedAddressFamilyIPv6, lo6},
		{"v6 client, family omitted", lo6, pionturn.RequestedAddressFamilyIPv4, lo4},
		{"v4 client, v6 relayed", lo4, pionturn.RequestedAddressFamilyIPv6, lo6},
		{"v4 client, v4 relayed", lo4, 0, lo4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			relay, err := r.clientOver(t, tc.over, tc.family).Allocate()
			if err != nil {
				t.Fatal(err)
			}
			defer relay.Close()
			relayed := relay.LocalAddr().(*net.UDPAddr).AddrPort()
			if relayed.Addr() != tc.want || relayed.Port() < 29200 || relayed.Port() > 29299 {
				t.Fatalf("relayed address %s, want %s in 29200-29299", relayed, tc.want)
			}
			exchange(t, relay, peerAt(t, tc.want))
			// The relay's own port, in every spelling of its family.
			spellings := []string{"::1", "::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::"}
			if tc.want.Is4() {
				spellings = []string{"127.0.0.1", "::ffff:127.0.0.1"}
			}
			for _, s := range spellings {
				if r.dp.PermitsPeer(netip.AddrPortFrom(netip.MustParseAddr(s), relayed.Port())) {
					t.Errorf("relayed port permitted as a peer at %s", s)
				}
			}
		})
	}
}

// TestIPv6RefusedWithoutPublicIPv6: with no public IPv6 address known
// IPv6 allocations are refused (addr_family) and IPv4 ones go on; with
// no public address at all both are refused as no_address.
func TestIPv6RefusedWithoutPublicIPv6(t *testing.T) {
	r := newDualRelay(t, lo4, netip.Addr{})
	if _, err := r.clientOver(t, lo6, pionturn.RequestedAddressFamilyIPv6).Allocate(); err == nil {
		t.Fatal("IPv6 allocation without a public IPv6 address")
	}
	if n := r.srv.Stats().Refused[RefusedAddrFamily]; n != 1 {
		t.Fatalf("addr_family refusals %d, want 1", n)
	}
	relay, err := r.clientOver(t, lo6, 0).Allocate() // family inferred: IPv6
	if err == nil {
		relay.Close()
		t.Fatal("IPv6 allocation without a public IPv6 address")
	}
	relay, err = r.clientOver(t, lo6, pionturn.RequestedAddressFamilyIPv4).Allocate()
	if err != nil {
		t.Fatalf("IPv4 allocation beside a refused IPv6 one: %v", err)
	}
	relay.Close()
	if r.gate.Held() > 1 || r.srv.Stats().Refused[RefusedPool] != 0 {
		t.Fatalf("a refused allocation holds a reservation or a port: %+v", r.srv.Stats())
	}

	none := newDualRelay(t, netip.Addr{}, netip.Addr{})
	if _, err := none.clientOver(t, lo4, pionturn.RequestedAddressFamilyIPv6).Allocate(); err == nil {
		t.Fatal("allocation without any public address")
	}
	if st := none.srv.Stats(); st.Refused[RefusedNoAddress] != 1 || st.Refused[RefusedAddrFamily] != 0 {
		t.Fatalf("refusals %v, want one no_address", st.Refused)
	}
}

// TestSpecificListenServesItsFamily: a relay listening on 127.0.0.1
// refuses IPv6 relayed addresses (addr_family).
func TestSpecificListenServesItsFamily(t *testing.T) {
	r := newTestRelay(t, netip.Addr{}, func(c *Config) { c.PublicAddr6 = func() netip.Addr { return lo6 } })
	if _, err := r.clientOver(t, lo4, pionturn.RequestedAddressFamilyIPv6).Allocate(); err == nil {
		t.Fatal("IPv6 allocation on an IPv4 listen address")
	}
	if n := r.srv.Stats().Refused[RefusedAddrFamily]; n != 1 {
		t.Fatalf("addr_family refusals %d, want 1", n)
	}
}

// rawAllocate sends an Allocate with extra attributes over conn, logs in
// with the long-term credential (the 401's realm and nonce) and returns
// the final response.
func rawAllocate(t *testing.T, conn *net.UDPConn, server netip.AddrPort, extra ...stun.Setter) *stun.Message {
	t.Helper()
	user := Username(time.Now().Add(time.Hour), "raw")
	send := func(setters ...stun.Setter) *stun.Message {
		req := stun.MustBuild(append([]stun.Setter{stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
			stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}}, setters...)...)
		if _, err := conn.WriteToUDPAddrPort(req.Raw, server); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		res := &stun.Message{Raw: buf[:n]}
		if err := res.Decode(); err != nil {
			t.Fatal(err)
		}
		return res
	}
	challenge := send(extra...)
	var realm stun.Realm
	var nonce stun.Nonce
	if err := realm.GetFrom(challenge); err != nil {
		t.Fatalf("no realm in %v: %v", challenge, err)
	}
	if err := nonce.GetFrom(challenge); err != nil {
		t.Fatal(err)
	}
	pass := Password(testSecret, user)
	return send(append(extra, stun.NewUsername(user), realm, nonce,
		stun.NewLongTermIntegrity(user, realm.String(), pass), stun.Fingerprint)...)
}

// attrAdditionalAddressFamily is RFC 8656's ADDITIONAL-ADDRESS-FAMILY,
// which pion does not know.
const attrAdditionalAddressFamily stun.AttrType = 0x8000

// TestAdditionalAddressFamilyIgnored: pion ignores ADDITIONAL-ADDRESS-
// FAMILY (comprehension-optional, not implemented): a client asking for a
// dual allocation gets one relayed address, IPv4 (the default when no
// REQUESTED-ADDRESS-FAMILY names another), and no 420.
func TestAdditionalAddressFamilyIgnored(t *testing.T) {
	r := newDualRelay(t, lo4, lo6)
	conn := peerAt(t, lo6)
	server := netip.AddrPortFrom(lo6, r.srv.Addr().Port())
	res := rawAllocate(t, conn, server, stun.RawAttribute{Type: attrAdditionalAddressFamily, Value: []byte{0x02, 0, 0, 0}})
	if res.Type != stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse) {
		var code stun.ErrorCodeAttribute
		code.GetFrom(res)
		t.Fatalf("dual allocation request answered %v (%v)", res.Type, code)
	}
	var relayed []netip.Addr
	res.ForEach(stun.AttrXORRelayedAddress, func(m *stun.Message) error {
		var a stun.XORMappedAddress
		if err := a.GetFromAs(m, stun.AttrXORRelayedAddress); err != nil {
			return err
		}
		ip, _ := netip.AddrFromSlice(a.IP)
		relayed = append(relayed, ip.Unmap())
		return nil
	})
	if len(relayed) != 1 || relayed[0] != lo4 {
		t.Fatalf("relayed addresses %v, want one: 127.0.0.1", relayed)
	}
}

// TestRefusedFamilyCode: pion answers an allocation the relay refuses
// for its family with 508 (Insufficient Capacity), not 440: it maps
// every error of the relayed-address generator to 508.
func TestRefusedFamilyCode(t *testing.T) {
	r := newDualRelay(t, lo4, netip.Addr{})
	conn := peerAt(t, lo6)
	server := netip.AddrPortFrom(lo6, r.srv.Addr().Port())
	res := rawAllocate(t, conn, server, stun.RawAttribute{Type: stun.AttrRequestedAddressFamily, Value: []byte{0x02, 0, 0, 0}})
	var code stun.ErrorCodeAttribute
	if err := code.GetFrom(res); err != nil || code.Code != stun.CodeInsufficientCapacity {
		t.Fatalf("IPv6 allocation without a public IPv6 address answered %v (%v), want 508", code, err)
	}
	// An address family neither IPv4 nor IPv6 is pion's 440.
	res = rawAllocate(t, conn, server, stun.RawAttribute{Type: stun.AttrRequestedAddressFamily, Value: []byte{0x03, 0, 0, 0}})
	if err := code.GetFrom(res); err != nil || code.Code != stun.CodeAddrFamilyNotSupported {
		t.Fatalf("unknown family answered %v (%v), want 440", code, err)
	}
}

// TestLimiterKeysMappedAddresses: an IPv4 client on the dual-stack
// socket arrives as ::ffff:a.b.c.d: the per-source limit counts it as
// the IPv4 address, whichever spelling reaches it, and an IPv6 client as
// its /64.
func TestLimiterKeysMappedAddresses(t *testing.T) {
	c := &limitedConn{sources: map[netip.Addr]*rate.Limiter{}}
	c.allow(net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[::ffff:192.0.2.1]:5000")))
	c.allow(&net.UDPAddr{IP: net.IPv4(192, 0, 2, 1).To4(), Port: 5001})
	c.allow(&net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5002}) // net.IP's 16-byte form
	if _, ok := c.sources[netip.MustParseAddr("192.0.2.1")]; !ok || len(c.sources) != 1 {
		t.Fatalf("sources %v, want one: 192.0.2.1", c.sources)
	}
	// An IPv6 subscriber's /64 is one source, whichever address it uses.
	c.allow(net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8::1]:5000")))
	c.allow(net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8::2:3]:5000")))
	if _, ok := c.sources[netip.MustParseAddr("2001:db8::")]; !ok || len(c.sources) != 2 {
		t.Fatalf("sources %v, want 192.0.2.1 and 2001:db8::/64", c.sources)
	}
}
