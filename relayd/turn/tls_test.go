package turn

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	pionturn "github.com/pion/turn/v5"

	"github.com/jnrelay/jnrelay/internal/testcert"
)

// selfSigned is a certificate for 127.0.0.1 made for the test, and a pool
// that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	c := testcert.New(t, "127.0.0.1")
	return c.TLS(), c.Pool()
}

func TestTLSAllocationRelaysBothWays(t *testing.T) {
	cert, pool := selfSigned(t)
	r := newTestRelay(t, netip.Addr{}, func(c *Config) {
		c.TLS = &TLSConfig{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Certificate: cert}
	})
	if !r.srv.TLSAddr().IsValid() || r.srv.TLSAddr().Port() == 0 {
		t.Fatalf("TLS address %s", r.srv.TLSAddr())
	}
	conn, err := tls.Dial("tcp", r.srv.TLSAddr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if v := conn.ConnectionState().Version; v != tls.VersionTLS12 {
		t.Fatalf("TLS version %x", v)
	}
	c := newClient(t, pionturn.NewSTUNConn(conn), r.srv.TLSAddr().String(), "tls1", time.Hour, nil)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	relayed := relay.LocalAddr().(*net.UDPAddr).AddrPort()
	if relayed.Port() < 29000 || relayed.Port() > 29099 || r.gate.Held() != 1 {
		t.Fatalf("relayed address %s, %d reservations: want a relay port, 1", relayed, r.gate.Held())
	}
	if l := r.srv.Allocations(); len(l) != 1 || l[0].Transport != "tls" || l[0].Client != conn.LocalAddr().String() {
		t.Fatalf("listed %+v, want one allocation from %s over tls", l, conn.LocalAddr())
	}
	p := peer(t)
	// Payloads of 100 bytes: pion's stream framing (on both sides) waits
	// for a ninth byte before it parses a frame, so a ChannelData of 4
	// payload bytes or fewer stalls until the next one; media (RTP, 12
	// bytes of header at least) never is that small.
	for i := range 3 {
		msg := bytes.Repeat([]byte{'t', byte(i)}, 50)
		if _, err := relay.WriteTo(msg, p.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		got, from, err := readWithin(t, p, 5*time.Second)
		if err != nil || string(got) != string(msg) || from.(*net.UDPAddr).AddrPort() != relayed {
			t.Fatalf("peer got %q from %v (%v), want %q from %s", got, from, err, msg, relayed)
		}
		back := bytes.Repeat([]byte{'b', byte(i)}, 50)
		if _, err := p.WriteTo(back, net.UDPAddrFromAddrPort(relayed)); err != nil {
			t.Fatal(err)
		}
		got, from, err = readWithin(t, relay, 5*time.Second)
		if err != nil || string(got) != string(back) || from.String() != p.LocalAddr().String() {
			t.Fatalf("client got %q from %v (%v), want %q; stats %+v", got, from, err, back, r.srv.Stats())
		}
	}
	// The peer rule holds over TLS as over UDP (once the counters caught
	// up with the datagrams the peer already has).
	waitFor(t, "the bytes counted", func() bool { return r.srv.Stats().BytesToPeers == 300 })
	refusedSend(t, r, relay, netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(p.LocalAddr().(*net.UDPAddr).Port)), p)
	if err := relay.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reservation's release", func() bool { return r.gate.Held() == 0 })
	// TLS 1.1 and older are refused.
	old, err := tls.Dial("tcp", r.srv.TLSAddr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS11})
	if err == nil {
		old.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
}

// newStallListener is a TLS listener on loopback with the given handshake
// timeout, and a counter of its source-bound refusals.
func newStallListener(t *testing.T, timeout time.Duration) (*tlsListener, *atomic.Int64) {
	t.Helper()
	cert, _ := selfSigned(t)
	inner, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int64
	l := newTLSListener(inner, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}, timeout,
		slog.New(slog.DiscardHandler), func() { refused.Add(1) })
	t.Cleanup(func() { l.Close() })
	return l, &refused
}

// closedWithin reports whether the server closed c within d (a read
// returns EOF or a reset rather than timing out).
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 64))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func TestTLSStalledHandshakeClosedWithinBound(t *testing.T) {
	const bound = 500 * time.Millisecond
	l, _ := newStallListener(t, bound)
	stalled, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	start := time.Now()
	// A client that completes its handshake meanwhile is not held up by
	// the stalled one.
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	good, err := tls.Dial("tcp4", l.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("a completed handshake was not accepted while another stalled")
	}
	if !closedWithin(stalled, bound+5*time.Second) {
		t.Fatal("the stalled handshake's connection is still open")
	}
	// The server's clock starts when it accepts, which may be a little
	// before the dial returns here.
	if waited := time.Since(start); waited < bound-100*time.Millisecond {
		t.Fatalf("closed after %s, well before the %s bound", waited, bound)
	}
}

func TestTLSConnectionsPerSourceBounded(t *testing.T) {
	l, refused := newStallListener(t, time.Minute)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range tlsPerSource {
		c, err := net.Dial("tcp4", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	extra, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if !closedWithin(extra, 5*time.Second) {
		t.Fatalf("connection %d of one source was kept", tlsPerSource+1)
	}
	waitFor(t, "the refusal's count", func() bool { return refused.Load() == 1 })
	// The held ones were not closed, and Close ends their handshakes.
	if closedWithin(conns[0], 50*time.Millisecond) {
		t.Fatal("a connection within the bound was closed")
	}
	l.Close()
	for i, c := range conns {
		if !closedWithin(c, 5*time.Second) {
			t.Fatalf("connection %d still open after Close", i)
		}
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

// remoteOnly is a connection that only knows its remote address.
type remoteOnly struct {
	net.Conn
	remote net.Addr
}

func (c remoteOnly) RemoteAddr() net.Addr { return c.remote }

func TestTLSSourceIsAddressOrSlash64(t *testing.T) {
	for _, c := range []struct{ remote, want string }{
		{"192.0.2.7:5000", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:5000", "192.0.2.7"},
		{"[2001:db8:1:2:aaaa::1]:5000", "2001:db8:1:2::"},
		{"[2001:db8:1:2:bbbb::9]:6000", "2001:db8:1:2::"},
	} {
		conn := remoteOnly{remote: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(c.remote))}
		if got := sourceOf(conn); got != netip.MustParseAddr(c.want) {
			t.Errorf("source of %s: %s, want %s", c.remote, got, c.want)
		}
	}
}
