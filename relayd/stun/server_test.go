package stun

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// ioTimeout bounds every wait on the network; expiring fails the test (it
// is never used to sequence anything).
const ioTimeout = 10 * time.Second

// loopbacks are the addresses the UDP tests run on; ::1 is skipped where
// the host has no IPv6.
var loopbacks = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}

// startServer runs a Server on cfg until the test ends and checks that
// Serve then returns nil.
func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	srv, err := New(cfg)
	if err != nil {
		if cfg.Listen.Addr().Is6() && errors.Is(err, syscall.EADDRNOTAVAIL) {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(ioTimeout):
			t.Error("Serve did not return after cancel")
		}
	})
	return srv
}

// dial opens a client socket connected to the server.
func dial(t *testing.T, srv *Server) *net.UDPConn {
	t.Helper()
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestBindingOverUDP(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.String(), func(t *testing.T) {
			srv := startServer(t, Config{Listen: netip.AddrPortFrom(lo, 0), Software: "jnrelay test"})
			if srv.Addr().Addr() != lo || srv.Addr().Port() == 0 {
				t.Fatalf("Addr() = %s", srv.Addr())
			}
			conn := dial(t, srv)
			client, err := stun.NewClient(conn)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			for i := range 3 {
				var (
					mapped   stun.XORMappedAddress
					software string
					cbErr    error
				)
				req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
				if err := client.Do(req, func(e stun.Event) {
					if cbErr = e.Error; cbErr != nil {
						return
					}
					if e.Message.Type != stun.BindingSuccess {
						cbErr = errors.New("not a Binding success: " + e.Message.Type.String())
					} else if cbErr = stun.Fingerprint.Check(e.Message); cbErr == nil {
						// The event's message is reused after the callback: copy.
						var sw stun.Software
						if cbErr = mapped.GetFrom(e.Message); cbErr == nil {
							cbErr = sw.GetFrom(e.Message)
							software = sw.String()
							mapped.IP = slices.Clone(mapped.IP)
						}
					}
				}); err != nil {
					t.Fatal(err)
				}
				if cbErr != nil {
					t.Fatalf("request %d: %v", i, cbErr)
				}
				local := conn.LocalAddr().(*net.UDPAddr)
				if !mapped.IP.Equal(local.IP) || mapped.Port != local.Port {
					t.Fatalf("request %d: mapped %s, client socket %s", i, mapped, local)
				}
				if software != "jnrelay test" {
					t.Fatalf("SOFTWARE %q", software)
				}
			}
			st := srv.Stats()
			if st.Responses < 3 || st.Requests != st.Responses+st.TotalDropped() || st.Malformed != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestMalformedUnanswered sends each malformed or unanswerable datagram
// followed by a valid request: since the server handles one socket in
// order, the first datagram the client reads must be the answer to the
// valid request, which proves the first one was not answered.
func TestMalformedUnanswered(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.String(), func(t *testing.T) {
			srv := startServer(t, Config{Listen: netip.AddrPortFrom(lo, 0)})
			conn := dial(t, srv)
			local := conn.LocalAddr().(*net.UDPAddr).AddrPort()
			want := Stats{}
			buf := make([]byte, 2048)
			for _, c := range malformedCases(t) {
				valid := build(t, stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
				for _, pkt := range [][]byte{c.pkt, valid} {
					if _, err := conn.Write(pkt); err != nil {
						t.Fatalf("%s: %v", c.name, err)
					}
				}
				if err := conn.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
					t.Fatal(err)
				}
				n, err := conn.Read(buf)
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				if n < 20 || !bytes.Equal(buf[8:20], valid[8:20]) {
					t.Fatalf("%s: first datagram read is not the answer to the valid request: % x", c.name, buf[:n])
				}
				checkAnswer(t, valid, buf[:n], local)
				want.Requests += 2
				want.Responses++
				want.Dropped[c.reason]++
				if c.reason.Malformed() {
					want.Malformed++
				}
				// The drop was counted before the valid request was read.
				if got := srv.Stats(); got != want {
					t.Fatalf("%s: stats\n got %+v\nwant %+v", c.name, got, want)
				}
			}
		})
	}
}

func TestClassicOverUDP(t *testing.T) {
	for _, classic := range []bool{false, true} {
		srv := startServer(t, Config{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Classic: classic})
		conn := dial(t, srv)
		valid := build(t, stun.TransactionID, stun.BindingRequest)
		for _, pkt := range [][]byte{classicRequest, valid} {
			if _, err := conn.Write(pkt); err != nil {
				t.Fatal(err)
			}
		}
		if err := conn.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if gotClassic := bytes.Equal(buf[4:20], classicRequest[4:20]); gotClassic != classic {
			t.Fatalf("classic=%v: first answer % x", classic, buf[:n])
		}
		if !classic && srv.Stats().Dropped[DropBadCookie] != 1 {
			t.Fatalf("stats %+v", srv.Stats())
		}
	}
}

func TestServeLifecycle(t *testing.T) {
	pre, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Conn: pre})
	if err != nil {
		t.Fatal(err)
	}
	if srv.Addr() != pre.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Fatalf("Addr() = %s, socket %s", srv.Addr(), pre.LocalAddr())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()

	// One exchange proves Serve is running before it is stopped.
	conn := dial(t, srv)
	valid := build(t, stun.TransactionID, stun.BindingRequest)
	if _, err := conn.Write(valid); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Read(make([]byte, 2048)); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel: %v", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Serve did not return after cancel")
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close after Serve: %v", err)
	}
	if _, err := pre.WriteToUDPAddrPort(valid, srv.Addr()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("socket still open after Serve returned: %v", err)
	}
	if err := srv.Serve(context.Background()); err == nil {
		t.Fatal("second Serve succeeded")
	}
}

func TestNewErrors(t *testing.T) {
	pre, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Conn: pre, Listen: netip.MustParseAddrPort("127.0.0.1:0")}); err == nil {
		t.Fatal("Listen and Conn together accepted")
	}
	if _, err := pre.WriteToUDPAddrPort([]byte{0}, netip.MustParseAddrPort("127.0.0.1:9")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("rejected Conn not closed: %v", err)
	}
	for _, sw := range []string{"0123456789abcdef0123456789abcdef+", "\xff\xfe"} {
		if _, err := New(Config{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Software: sw}); err == nil {
			t.Fatalf("software %q accepted", sw)
		}
	}
	busy := startServer(t, Config{Listen: netip.MustParseAddrPort("127.0.0.1:0")})
	if _, err := New(Config{Listen: busy.Addr()}); err == nil {
		t.Fatal("second server on the same port")
	}
}

func TestDefaultListen(t *testing.T) {
	srv, err := New(Config{})
	if errors.Is(err, syscall.EADDRINUSE) {
		t.Skipf("port %d busy on this host: %v", DefaultPort, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if a := srv.Addr(); a.Port() != DefaultPort || !a.Addr().IsUnspecified() {
		t.Fatalf("default Addr() = %s, want every address on port %d", a, DefaultPort)
	}
}

// TestResponseRateLimit floods a server capped at 5 responses a second
// (burst 10) with 40 well-formed requests: about the burst is answered,
// the rest dropped as rate_limited, and every request is accounted for.
func TestResponseRateLimit(t *testing.T) {
	srv := startServer(t, Config{Listen: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 0), MaxResponsesPerSecond: 5})
	conn := dial(t, srv)
	const n = 40
	for range n {
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
		if _, err := conn.Write(req.Raw); err != nil {
			t.Fatal(err)
		}
	}
	// Count answers until the line goes quiet (the dropped ones never
	// come: there is nothing else to wait for).
	answers := 0
	buf := make([]byte, 1500)
	for {
		conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := conn.Read(buf); err != nil {
			break
		}
		answers++
	}
	st := srv.Stats()
	limited := st.Dropped[DropRateLimited]
	t.Logf("%d of %d answered, %d rate limited", answers, n, limited)
	if answers < 10 || answers > 14 || uint64(answers) != st.Responses || st.Requests != n || st.Responses+limited != n {
		t.Fatalf("answers %d, stats %+v", answers, st)
	}
	if got := st.DroppedBy()["rate_limited"]; got != limited {
		t.Fatalf("DroppedBy rate_limited %d, want %d", got, limited)
	}
}
