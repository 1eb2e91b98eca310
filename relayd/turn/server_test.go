package turn

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/logging"
	pionturn "github.com/pion/turn/v5"
	"mellium.im/xmpp/jid"

	"github.com/jnrelay/jnrelay/relayd/admission"
	"github.com/jnrelay/jnrelay/relayd/channel"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

type testRelay struct {
	dp   *channel.Manager
	gate *admission.Gate
	reqs *Requesters
	srv  *Server
}

// newTestRelay runs a data plane on 127.0.0.1 advertising public (the
// listen address when invalid) and a TURN server over it.
func newTestRelay(t *testing.T, public netip.Addr, options ...func(*Config)) *testRelay {
	t.Helper()
	lo := netip.MustParseAddr("127.0.0.1")
	dp, err := channel.New(channel.Config{Listen: lo, Settings: channel.Settings{PortMin: 29000, PortMax: 29099,
		Expire: time.Minute, LatchGrace: 5 * time.Second}, PublicAddr: func() netip.Addr { return public }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dp.Close)
	advertised := public
	if !advertised.IsValid() {
		advertised = lo
	}
	r := &testRelay{dp: dp, gate: admission.New(admission.Config{Draining: dp.Draining}), reqs: NewRequesters(0)}
	cfg := Config{Listen: netip.AddrPortFrom(lo, 0), TCP: true, Realm: "jnrelay", Secret: testSecret,
		PublicAddr: func() netip.Addr { return advertised }, DataPlane: dp, Gate: r.gate, Requesters: r.reqs,
		Logger: slog.New(slog.DiscardHandler)}
	for _, o := range options {
		o(&cfg)
	}
	r.srv, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.srv.Close() })
	return r
}

// client logs in with credentials minted for id, valid for ttl.
func (r *testRelay) client(t *testing.T, id string, ttl time.Duration) *pionturn.Client {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return r.clientOn(t, conn, id, ttl)
}

// clientOn is client on the test's own socket conn.
func (r *testRelay) clientOn(t *testing.T, conn net.PacketConn, id string, ttl time.Duration) *pionturn.Client {
	t.Helper()
	return newClient(t, conn, r.srv.Addr().String(), id, ttl, nil)
}

// newClient is a listening pion TURN client on conn (a socket, or a
// stream in pion's STUNConn) of the server at addr, with credential id
// valid for ttl under the test secret; edit, if any, changes its
// configuration first.
func newClient(t *testing.T, conn net.PacketConn, addr, id string, ttl time.Duration, edit func(*pionturn.ClientConfig)) *pionturn.Client {
	t.Helper()
	user := Username(time.Now().Add(ttl), id)
	cfg := &pionturn.ClientConfig{TURNServerAddr: addr, STUNServerAddr: addr, Username: user,
		Password: Password(testSecret, user), Realm: "jnrelay", Conn: conn, RTO: 200 * time.Millisecond,
		LoggerFactory: logging.NewDefaultLoggerFactory()}
	if edit != nil {
		edit(cfg)
	}
	c, err := pionturn.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	return c
}

// peer is a UDP socket the test owns on loopback.
func peer(t *testing.T) *net.UDPConn {
	t.Helper()
	p, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func readWithin(t *testing.T, c net.PacketConn, d time.Duration) ([]byte, net.Addr, error) {
	t.Helper()
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(d))
	n, from, err := c.ReadFrom(buf)
	return buf[:n], from, err
}

// waitFor polls cond (a state the server reaches on its own, with no event
// to await) for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestAllocateRelayBothWaysAndRelease(t *testing.T) {
	r := newTestRelay(t, netip.Addr{})
	r.reqs.Record("c1", jid.MustParse("alice@example.org/phone"), time.Now().Add(time.Hour))
	c := r.client(t, "c1", time.Hour)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	relayed := relay.LocalAddr().(*net.UDPAddr).AddrPort()
	if relayed.Addr() != netip.MustParseAddr("127.0.0.1") || relayed.Port() < 29000 || relayed.Port() > 29099 {
		t.Fatalf("relayed address %s outside the relay port range", relayed)
	}
	if r.gate.Held() != 1 {
		t.Fatalf("gate holds %d reservations, want 1", r.gate.Held())
	}
	p := peer(t)
	// Several datagrams: the first goes in a Send indication after
	// CreatePermission, later ones over the channel pion's client binds.
	for i := range 5 {
		msg := []byte{'m', byte(i)}
		if _, err := relay.WriteTo(msg, p.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		got, from, err := readWithin(t, p, 5*time.Second)
		if err != nil || string(got) != string(msg) || from.(*net.UDPAddr).AddrPort() != relayed {
			t.Fatalf("peer got %q from %v (%v), want %q from %s", got, from, err, msg, relayed)
		}
		if _, err := p.WriteTo([]byte{'r', byte(i)}, net.UDPAddrFromAddrPort(relayed)); err != nil {
			t.Fatal(err)
		}
		got, from, err = readWithin(t, relay, 5*time.Second)
		if err != nil || string(got) != string([]byte{'r', byte(i)}) || from.String() != p.LocalAddr().String() {
			t.Fatalf("client got %q from %v (%v)", got, from, err)
		}
	}
	// The relayed socket counts a datagram after its send returns, which
	// the peer's read may overtake: wait for the last count.
	waitFor(t, "10 bytes counted each way", func() bool {
		st := r.srv.Stats()
		return st.BytesToPeers >= 10 && st.BytesFromPeers >= 10
	})
	st := r.srv.Stats()
	if st.AllocationsLive != 1 || st.AllocationsTotal != 1 || st.BytesToPeers != 10 || st.BytesFromPeers != 10 {
		t.Fatalf("stats %+v", st)
	}
	// The allocation's port is the relay's own: a channel's peer may not be it.
	if r.dp.PermitsPeer(relayed) {
		t.Fatal("relayed port permitted as a peer")
	}
	relay.Close() // a Refresh with lifetime 0 ends the allocation
	waitFor(t, "the reservation back", func() bool { return r.gate.Held() == 0 && r.srv.Stats().AllocationsLive == 0 })
	if !r.dp.PermitsPeer(relayed) {
		t.Fatal("released relay port still refused")
	}
}

func TestExpiredAndForgedCredentialsRefused(t *testing.T) {
	r := newTestRelay(t, netip.Addr{})
	if _, err := r.client(t, "old", -time.Minute).Allocate(); err == nil {
		t.Fatal("expired credentials allocated")
	}
	if r.srv.Stats().Refused[RefusedAuth] == 0 {
		t.Fatal("expired credentials not counted")
	}
	conn, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer conn.Close()
	c := newClient(t, conn, r.srv.Addr().String(), "forged", time.Hour, func(c *pionturn.ClientConfig) {
		c.Password = Password([]byte("another secret"), c.Username)
	})
	before := r.srv.Stats().Refused[RefusedAuth]
	if _, err := c.Allocate(); err == nil {
		t.Fatal("credentials of another secret allocated")
	}
	if r.gate.Held() != 0 || r.srv.Stats().AllocationsTotal != 0 {
		t.Fatal("a refused login holds an allocation")
	}
	// A well-formed username with the wrong password fails pion's
	// integrity check, after our handler: it is an auth refusal too.
	if after := r.srv.Stats().Refused[RefusedAuth]; after <= before {
		t.Fatalf("wrong password not counted as an auth refusal (%d before, %d after)", before, after)
	}
}

func TestAdmissionRefusalAndDrain(t *testing.T) {
	r := newTestRelay(t, netip.Addr{})
	r.gate.SetLimits(admission.Limits{MaxChannels: 1})
	if _, err := r.client(t, "a", time.Hour).Allocate(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.client(t, "b", time.Hour).Allocate(); err == nil {
		t.Fatal("allocation beyond max_channels")
	}
	if r.srv.Stats().Refused[RefusedAdmission] != 1 {
		t.Fatalf("refusals %v", r.srv.Stats().Refused)
	}
	r.gate.SetLimits(admission.Limits{})
	r.dp.Drain()
	if _, err := r.client(t, "c", time.Hour).Allocate(); err == nil {
		t.Fatal("allocation while draining")
	}
}

// refusedSend asserts that the client cannot make the relay send to to:
// either the permission is refused, or the datagram is dropped at the
// relay; the test's peer socket receives nothing either way.
func refusedSend(t *testing.T, r *testRelay, relay net.PacketConn, to netip.AddrPort, watch *net.UDPConn) {
	t.Helper()
	before := r.srv.Stats()
	_, err := relay.WriteTo([]byte("leak"), net.UDPAddrFromAddrPort(to))
	waitFor(t, "the refusal of "+to.String(), func() bool {
		return err != nil || r.srv.Stats().Refused[RefusedPeer] > before.Refused[RefusedPeer]
	})
	if after := r.srv.Stats(); after.BytesToPeers != before.BytesToPeers {
		t.Fatalf("%d bytes sent toward %s", after.BytesToPeers-before.BytesToPeers, to)
	}
	if watch != nil {
		// Nothing to await: the peer may get nothing, so give the relay
		// a bounded while to (wrongly) send.
		got, from, err := readWithin(t, watch, 300*time.Millisecond)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("refused peer %s received %q from %v (%v)", to, got, from, err)
		}
	}
}

func TestRefusedPeersLoopbackRelay(t *testing.T) {
	r := newTestRelay(t, netip.Addr{})
	relay, err := r.client(t, "x", time.Hour).Allocate()
	if err != nil {
		t.Fatal(err)
	}
	own := relay.LocalAddr().(*net.UDPAddr).AddrPort()
	info, err := r.dp.Allocate() // a live channel's port is the relay's own too
	if err != nil {
		t.Fatal(err)
	}
	for _, to := range []netip.AddrPort{
		own, netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1"), own.Port()),
		netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(info.LocalPort)),
		netip.MustParseAddrPort("0.0.0.0:9"),
	} {
		refusedSend(t, r, relay, to, nil)
	}
}

func TestRefusedPeersPublicRelay(t *testing.T) {
	r := newTestRelay(t, netip.MustParseAddr("203.0.113.7"))
	relay, err := r.client(t, "x", time.Hour).Allocate()
	if err != nil {
		t.Fatal(err)
	}
	if got := relay.LocalAddr().(*net.UDPAddr).AddrPort().Addr(); got != netip.MustParseAddr("203.0.113.7") {
		t.Fatalf("relayed address at %s, want the public address", got)
	}
	p := peer(t)
	port := p.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	for _, a := range []string{"127.0.0.1", "::ffff:127.0.0.1"} {
		refusedSend(t, r, relay, netip.AddrPortFrom(netip.MustParseAddr(a), port), p)
	}
}
