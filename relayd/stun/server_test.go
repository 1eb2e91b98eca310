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

	"github.com/pion/stun/v4"
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
// TestResponseRateLimit: 20 sources send two requests each (within their
// own share) to a server capped at 5 answers a second: the global burst of
// 10 is answered, the other 30 are dropped as rate_limited.
func TestResponseRateLimit(t *testing.T) {
	srv := startServer(t, Config{Listen: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 0), MaxResponsesPerSecond: 5})
	const sources, each = 20, 2
	var conns []*net.UDPConn
	for i := range sources {
		conns = append(conns, dialFrom(t, srv, loopbackN(t, 10+i)))
	}
	for _, c := range conns {
		for range each {
			req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
			if _, err := c.Write(req.Raw); err != nil {
				t.Fatal(err)
			}
		}
	}
	const n = sources * each
	st := awaitStats(t, srv, func(st Stats) bool { return st.Responses+st.TotalDropped() == n })
	answers := collect(t, conns)
	for range st.Responses {
		awaitAnswer(t, answers)
	}
	limited := st.Dropped[DropRateLimited]
	t.Logf("%d of %d answered, %d rate limited", st.Responses, n, limited)
	// The bucket refills one token per 200 ms: a slow run may get a few more.
	if st.Responses < 10 || st.Responses > 14 || st.Requests != n || st.Responses+limited != n || st.Dropped[DropSourceRateLimited] != 0 {
		t.Fatalf("stats %+v", st)
	}
	if got := st.DroppedBy()["rate_limited"]; got != limited {
		t.Fatalf("DroppedBy rate_limited %d, want %d", got, limited)
	}
}

// TestSourceShare: one source sending 40 requests at once to a server
// capped at 100 answers a second gets its share (a tenth: a burst of 20);
// the other 20 are dropped as source_rate_limited and leave the global
// cap untouched, so another source is then answered in full.
func TestSourceShare(t *testing.T) {
	srv := startServer(t, Config{Listen: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 0), MaxResponsesPerSecond: 100})
	flooder, other := dialFrom(t, srv, loopbackN(t, 2)), dialFrom(t, srv, loopbackN(t, 3))
	send := func(c *net.UDPConn, n int) {
		for range n {
			if _, err := c.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(flooder, 40)
	st := awaitStats(t, srv, func(st Stats) bool { return st.Responses+st.TotalDropped() == 40 })
	// 10 tokens a second: a slow run may get one or two more.
	if st.Responses < 20 || st.Responses > 22 || st.Dropped[DropSourceRateLimited] != 40-st.Responses || st.Dropped[DropRateLimited] != 0 {
		t.Fatalf("flooder: stats %+v", st)
	}
	send(other, 20)
	answers := collect(t, []*net.UDPConn{other})
	for range 20 {
		if a := awaitAnswer(t, answers); a.to != other {
			t.Fatal("answer on the wrong socket")
		}
	}
	if got := srv.Stats().DroppedBy()["source_rate_limited"]; got != st.Dropped[DropSourceRateLimited] {
		t.Fatalf("source_rate_limited %d after the other source, want %d", got, st.Dropped[DropSourceRateLimited])
	}
}

// TestOneFlooderDoesNotSilenceOthers: one source floods 20,000 Binding
// requests (paced at about 20 a millisecond, so at least a second) at a
// server with the default cap of 200 answers a second; while it floods,
// another source makes ten transactions (each retransmitted, as clients
// do, if an answer is lost) and all ten are answered at the first try or
// nearly. With one bucket for everyone the flood takes nearly every
// answer: the honest caller then needs about three tries a transaction
// (measured, retransmitting every 50 ms: 27 requests for 10, up to 405 ms
// each), and the flooder gets ten times its share.
func TestOneFlooderDoesNotSilenceOthers(t *testing.T) {
	const (
		capPerSecond = 200
		floodN       = 20000
		perTick      = 20
		honestN      = 10
		tries        = 10
		retransmit   = 200 * time.Millisecond
	)
	srv := startServer(t, Config{Listen: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 0), MaxResponsesPerSecond: capPerSecond})
	flooder, honest := dialFrom(t, srv, loopbackN(t, 2)), dialFrom(t, srv, loopbackN(t, 3))

	began := time.Now()
	flooding := make(chan struct{})
	floodDone := make(chan error, 1)
	go func() {
		defer close(flooding)
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for sent := 0; sent < floodN; {
			<-tick.C
			for range perTick {
				if _, err := flooder.Write(req); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
					floodDone <- err
					return
				}
				sent++
			}
		}
		floodDone <- nil
	}()
	// The honest caller starts once the flooder has sent more than it
	// may be answered: its share and, were there one bucket for all,
	// everyone's (the burst of 400).
	awaitStats(t, srv, func(st Stats) bool { return st.Requests >= 5*capPerSecond })

	local := honest.LocalAddr().(*net.UDPAddr).AddrPort()
	buf := make([]byte, 1500)
	var answered, sent int
	var latencies []time.Duration
	for i := range honestN {
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
		start := time.Now()
	try:
		for range tries {
			sent++
			if _, err := honest.Write(req.Raw); err != nil {
				t.Fatal(err)
			}
			honest.SetReadDeadline(time.Now().Add(retransmit))
			for {
				n, err := honest.Read(buf)
				if err != nil {
					break // retransmit
				}
				if n >= 20 && bytes.Equal(buf[8:20], req.Raw[8:20]) {
					checkAnswer(t, req.Raw, buf[:n], local)
					answered++
					latencies = append(latencies, time.Since(start))
					break try
				}
			}
		}
		if answered != i+1 {
			t.Fatalf("honest transaction %d unanswered after %d tries", i, tries)
		}
	}
	select {
	case <-flooding:
		t.Fatal("the flood ended before the honest transactions: they proved nothing")
	default:
	}
	honestDone := time.Since(began)
	select {
	case err := <-floodDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("flood did not end")
	}
	elapsed := time.Since(began)
	st := srv.Stats()
	// The flooder's answers: everything but the honest ones, at most its
	// burst plus its rate over the run.
	share := float64(capPerSecond) / sourceShare
	flooderAnswers := st.Responses - uint64(answered)
	t.Logf("flood: %d sent, %d read by the server by then, %d answered, %d source_rate_limited, %d rate_limited in %s; honest: %d/%d transactions answered (%d requests sent) within %s, latency max %s",
		floodN, st.Requests-uint64(sent), flooderAnswers, st.Dropped[DropSourceRateLimited], st.Dropped[DropRateLimited],
		elapsed.Round(time.Millisecond), answered, honestN, sent, honestDone.Round(time.Millisecond), slices.Max(latencies))
	if limit := 2*share + share*elapsed.Seconds() + 1; float64(flooderAnswers) > limit+float64(sent-answered) {
		t.Errorf("flooder got %d answers, its share over %s is %.0f", flooderAnswers, elapsed, limit)
	}
	if sent > honestN+honestN/2 {
		t.Errorf("the honest caller needed %d requests for %d transactions: the flood took its answers", sent, honestN)
	}
	if st.Dropped[DropRateLimited] != 0 {
		t.Errorf("%d requests hit the global cap: the flooder's share should have stopped it first", st.Dropped[DropRateLimited])
	}
}

// loopbackN is 127.0.0.n, a distinct source address on Linux's loopback.
func loopbackN(t *testing.T, n int) netip.Addr {
	t.Helper()
	return netip.AddrFrom4([4]byte{127, 0, 0, byte(n)})
}

// dialFrom opens a client socket on local connected to the server.
func dialFrom(t *testing.T, srv *Server, local netip.Addr) *net.UDPConn {
	t.Helper()
	conn, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)), net.UDPAddrFromAddrPort(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// awaitStats waits until the server's counters satisfy cond (polling the
// counters, which have no event to wait on), failing after ioTimeout.
func awaitStats(t *testing.T, srv *Server, cond func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		st := srv.Stats()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats never reached the expected state: %+v", st)
		}
		<-tick.C
	}
}

type answer struct {
	to  *net.UDPConn
	msg []byte
}

// collect reads every datagram arriving on conns until they are closed.
func collect(t *testing.T, conns []*net.UDPConn) <-chan answer {
	t.Helper()
	ch := make(chan answer, 64)
	for _, c := range conns {
		go func() {
			buf := make([]byte, 1500)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				ch <- answer{c, bytes.Clone(buf[:n])}
			}
		}()
	}
	return ch
}

func awaitAnswer(t *testing.T, ch <-chan answer) answer {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(ioTimeout):
		t.Fatal("no answer")
		return answer{}
	}
}
