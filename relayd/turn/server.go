package turn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	pionturn "github.com/pion/turn/v5"

	"github.com/jnrelay/jnrelay/relayd/admission"
	"github.com/jnrelay/jnrelay/relayd/channel"
)

// DataPlane is what the server asks of the data plane
// (*channel.Manager).
type DataPlane interface {
	OpenRelayPort(network string) (*channel.RelayPort, error)
	ServesFamily(network string) bool
	PermitsPeer(netip.AddrPort) bool
}

// Config configures a Server.
type Config struct {
	Listen netip.AddrPort // UDP address of the server (and TCP with TCP)
	TCP    bool
	TLS    *TLSConfig // TURN over TLS; nil = off
	Realm  string
	Secret []byte // the TURN REST shared secret
	// PublicAddr returns the relay's public address, the host of every
	// relayed address (invalid while unknown: allocations are refused).
	PublicAddr func() netip.Addr
	// PublicAddr6, when set, returns the relay's public IPv6 address, the
	// host of IPv6 relayed addresses (invalid while none: IPv6
	// allocations are refused; family.go).
	PublicAddr6 func() netip.Addr
	DataPlane   DataPlane
	Gate        *admission.Gate
	Requesters  *Requesters
	Logger      *slog.Logger
}

// TLSConfig configures the TLS listener (turns:).
type TLSConfig struct {
	Listen      netip.AddrPort // its TCP address (port 0: the kernel chooses)
	Certificate tls.Certificate
}

// SetCertificate replaces the TLS listener's certificate for the
// handshakes that follow (a renewed certificate, without ending the
// allocations).
func (s *Server) SetCertificate(cert tls.Certificate) { s.cert.Store(&cert) }

// Server is the built-in TURN server.
type Server struct {
	cfg     Config
	addr    netip.AddrPort   // the bound UDP address
	tlsAddr netip.AddrPort   // the bound TLS address, when serving TLS
	tcp     *net.TCPListener // with Config.TCP, at addr's port
	cert    atomic.Pointer[tls.Certificate]
	log     *slog.Logger
	pion    *pionturn.Server
	stats   *counters
	allocs  *allocations

	// Allocations still open, so that Serve returns only once every
	// allocation gave its port and reservation back (pion closes them in
	// goroutines of its own).
	mu      sync.Mutex
	closing bool
	open    int
	idle    chan struct{} // closed when open reaches 0 after closing
}

// New binds the server's sockets and starts serving.
func New(cfg Config) (*Server, error) {
	switch {
	case len(cfg.Secret) == 0:
		return nil, errors.New("turn: no shared secret")
	case cfg.DataPlane == nil || cfg.Gate == nil || cfg.PublicAddr == nil:
		return nil, errors.New("turn: data plane, admission gate and public address are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Requesters == nil {
		cfg.Requesters = NewRequesters(0)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, idle: make(chan struct{}), stats: newCounters(), allocs: newAllocations()}
	// An unspecified listen address (0.0.0.0 or ::) gets one IPv6 socket
	// with IPV6_V6ONLY off where the host has IPv6 (Go's choice for
	// "udp" and "tcp"): IPv4 clients arrive on it as ::ffff:a.b.c.d. A
	// specific address serves its own family only.
	pc, tcp, err := listenUDPAndTCP(cfg.Listen, cfg.TCP)
	if err != nil {
		return nil, err
	}
	s.addr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	s.tcp = tcp
	sc := pionturn.ServerConfig{
		Realm:               cfg.Realm,
		StrictAddressFamily: strictFamily(cfg.DataPlane),
		AuthHandler:         s.authenticate,
		QuotaHandler:        s.quota,
		EventHandler:        s.events(),
		LoggerFactory:       pionLogger{log: cfg.Logger},
		PacketConnConfigs: []pionturn.PacketConnConfig{{
			PacketConn:            newLimitedConn(pc, s),
			RelayAddressGenerator: relayAddresses{s},
			PermissionHandler:     s.permitPeerIP,
		}},
	}
	sc.ListenerConfigs, err = s.listeners()
	if err == nil {
		s.pion, err = pionturn.NewServer(sc)
		if err != nil {
			err = fmt.Errorf("turn: %w", err)
		}
	}
	if err != nil {
		pc.Close()
		for _, l := range sc.ListenerConfigs {
			l.Listener.Close()
		}
		return nil, err
	}
	return s, nil
}

// listenUDPAndTCP binds the UDP socket at listen and, with tcp, the TCP
// listener at the same port. When the kernel chooses the port (port 0),
// the UDP one it chose may be taken for TCP (an outgoing connection's
// local port, on a busy host): another pair is tried then, a bounded
// number of times.
func listenUDPAndTCP(listen netip.AddrPort, tcp bool) (*net.UDPConn, *net.TCPListener, error) {
	const tries = 16
	for i := 1; ; i++ {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(listen))
		if err != nil {
			return nil, nil, fmt.Errorf("turn: listen udp %s: %w", listen, err)
		}
		if !tcp {
			return pc, nil, nil
		}
		at := pc.LocalAddr().(*net.UDPAddr).AddrPort()
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(at))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if listen.Port() != 0 || !errors.Is(err, syscall.EADDRINUSE) || i == tries {
			return nil, nil, fmt.Errorf("turn: listen tcp %s: %w", at, err)
		}
	}
}

// listeners takes the TCP listener (with TCP) and binds the TLS one
// (with TLS); every stream listener has the same relayed addresses and peer
// rule as the UDP socket.
func (s *Server) listeners() ([]pionturn.ListenerConfig, error) {
	var out []pionturn.ListenerConfig
	add := func(l net.Listener) {
		out = append(out, pionturn.ListenerConfig{Listener: l, RelayAddressGenerator: relayAddresses{s}, PermissionHandler: s.permitPeerIP})
	}
	if s.tcp != nil {
		add(s.tcp)
	}
	if t := s.cfg.TLS; t != nil {
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(t.Listen))
		if err != nil {
			return out, fmt.Errorf("turn: listen tls %s: %w", t.Listen, err)
		}
		s.tlsAddr = ln.Addr().(*net.TCPAddr).AddrPort()
		s.SetCertificate(t.Certificate)
		config := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cert.Load(), nil
		}}
		add(newTLSListener(ln, config, tlsHandshakeTimeout, s.log, func() { s.stats.refuse(RefusedTLSSource) }))
	}
	return out, nil
}

// Serve runs until ctx is done, then closes the server and every
// allocation.
func (s *Server) Serve(ctx context.Context) {
	<-ctx.Done()
	if err := s.Close(); err != nil {
		s.log.Warn("TURN server close", "err", err)
	}
}

// closeWait bounds how long Close waits for pion to end the allocations.
const closeWait = 5 * time.Second

// Close stops the server and returns once every allocation has ended (or
// closeWait passed).
func (s *Server) Close() error {
	err := s.pion.Close()
	s.mu.Lock()
	s.closing = true
	wait := s.open > 0
	s.mu.Unlock()
	if wait {
		select {
		case <-s.idle:
		case <-time.After(closeWait):
			s.log.Warn("TURN allocations still open after close", "wait", closeWait)
		}
	}
	return err
}

// opened counts a new allocation; it fails once Close began.
func (s *Server) opened() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.open++
	s.stats.live.Add(1)
	s.stats.total.Add(1)
	return true
}

// ended counts an allocation's end.
func (s *Server) ended() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open--
	s.stats.live.Add(-1)
	if s.closing && s.open == 0 {
		close(s.idle)
	}
}

// Addr is the server's UDP address (its port chosen by the kernel when
// Config.Listen's was 0).
func (s *Server) Addr() netip.AddrPort { return s.addr }

// TLSAddr is the TLS listener's address (invalid without TLS).
func (s *Server) TLSAddr() netip.AddrPort { return s.tlsAddr }

// Stats returns the server's counters.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

// permits applies the data plane's live peer rule.
func (s *Server) permits(peer netip.AddrPort) bool { return s.cfg.DataPlane.PermitsPeer(peer) }

// permitPeerIP is pion's PermissionHandler (CreatePermission and
// ChannelBind). pion passes the peer's address only: port 1, which no
// relay port can be (the range starts above 1023), stands for "some
// port"; the relay's own live ports are refused per datagram
// (relayConn).
func (s *Server) permitPeerIP(_ net.Addr, ip net.IP) bool {
	a, ok := netip.AddrFromSlice(ip)
	if ok && s.permits(netip.AddrPortFrom(a, 1)) {
		return true
	}
	s.stats.refuse(RefusedPeer)
	return false
}

// authenticate is pion's AuthHandler for TURN REST credentials: expired,
// malformed and unsigned usernames are refused; the user id pion carries
// into the allocation is the credential id.
func (s *Server) authenticate(ra *pionturn.RequestAttributes) (string, []byte, bool) {
	expires, id, ok := parseUsername(ra.Username)
	if !ok || time.Now().After(expires) {
		s.stats.refuse(RefusedAuth)
		return "", nil, false
	}
	return id, pionturn.GenerateAuthKey(ra.Username, ra.Realm, Password(s.cfg.Secret, ra.Username)), true
}

// allocate opens an allocation's relayed socket: admitted by the gate in
// the name of the requester the credential was minted for, on a relay
// port of the data plane in the family pion asks for, at the relay's public
// address of that family (family.go).
func (s *Server) allocate(c pionturn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	public, err := s.relayedHost(c.Network)
	if err != nil {
		return nil, nil, err
	}
	requester := s.cfg.Requesters.requesterFor(c.UserID)
	ticket, err := s.cfg.Gate.Reserve(admission.Request{Requester: requester})
	if err != nil {
		s.stats.refuse(RefusedAdmission)
		s.log.Info("TURN allocation refused", "requester", requester.String(), "err", err)
		return nil, nil, err
	}
	port, err := s.cfg.DataPlane.OpenRelayPort(c.Network)
	if err != nil {
		ticket.Cancel()
		s.stats.refuse(RefusedPool)
		return nil, nil, err
	}
	if !s.opened() {
		port.Close()
		ticket.Cancel()
		return nil, nil, errors.New("TURN server closed")
	}
	local := port.LocalAddr().(*net.UDPAddr).AddrPort()
	relayed := net.UDPAddrFromAddrPort(netip.AddrPortFrom(public, local.Port()))
	ticket.Commit("turn:" + relayed.String())
	conn := &relayConn{RelayPort: port, srv: s, ticket: ticket}
	key, _ := netAddrPort(relayed) // as pion's events will name it
	conn.id = s.allocs.add(conn, requester, key)
	s.log.Info("TURN allocation", "id", conn.id, "requester", requester.String(), "relayed", relayed.String())
	return conn, relayed, nil
}

// relayAddresses is pion's RelayAddressGenerator over the data plane.
type relayAddresses struct{ s *Server }

func (r relayAddresses) Validate() error { return nil }

func (r relayAddresses) AllocatePacketConn(c pionturn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	if isEvenPortProbe(c.UserID) {
		return r.s.evenPortProbe()
	}
	return r.s.allocate(c)
}

// errTCPRelay: RFC 6062 TCP relayed addresses are not offered (the data
// plane relays UDP only).
var errTCPRelay = errors.New("TCP relayed addresses are not offered")

func (r relayAddresses) AllocateListener(pionturn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return nil, nil, errTCPRelay
}

func (r relayAddresses) AllocateConn(pionturn.AllocateConnConfig) (net.Conn, error) {
	return nil, errTCPRelay
}
