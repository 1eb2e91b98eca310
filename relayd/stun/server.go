package stun

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"
)

// DefaultPort is the STUN port (RFC 8489 section 18.5) used when
// Config.Listen is the zero AddrPort.
const DefaultPort = 3478

// DefaultSoftware is the SOFTWARE value when Config.Software is empty.
const DefaultSoftware = "jnrelay"

// Config configures a Server.
type Config struct {
	// Listen is the UDP address to bind. The zero AddrPort means every
	// address (IPv4 and IPv6) on DefaultPort; an explicit port 0 picks a
	// free port (see Server.Addr). Must be unset when Conn is set.
	Listen netip.AddrPort
	// Conn, when set, is a UDP socket opened by the caller (for example in
	// another network namespace) that the Server uses instead of opening
	// one. The Server owns it from New on and closes it.
	Conn *net.UDPConn
	// Logger receives the start, stop and error events, and at debug
	// level one line per dropped datagram; nil discards.
	Logger *slog.Logger
	// Software is sent in the SOFTWARE attribute of every response: at
	// most MaxSoftware bytes of UTF-8. Empty means DefaultSoftware.
	Software string
	// Classic also answers RFC 3489 Binding requests, which carry no magic
	// cookie (Debian's stun-client sends those), as RFC 5389 section 12.2
	// describes: the response echoes the request's 16-byte transaction ID
	// and carries MAPPED-ADDRESS instead of XOR-MAPPED-ADDRESS. When false,
	// such requests are dropped as DropBadCookie.
	Classic bool
	// MaxResponsesPerSecond caps the responses sent, over all sources (a
	// token bucket with a burst of twice as many): a STUN answer is larger
	// than the request, so a flood with forged sources would otherwise
	// turn the donor's line into a reflector. Requests over it are dropped
	// as DropRateLimited. Within the cap each source (an IPv4 address, an
	// IPv6 /64) has a bucket of its own of a tenth of it, at least one
	// answer a second (burst twice as many), so one flooder silences only
	// itself: requests over its share are dropped as DropSourceRateLimited.
	// 0 = no cap at all.
	MaxResponsesPerSecond int
}

// Server is a STUN Binding server on one UDP socket. It answers every
// valid Binding request with the source address it saw, and nothing else.
type Server struct {
	conn   *net.UDPConn
	addr   netip.AddrPort
	log    *slog.Logger
	h      *handler
	stats  counters
	served atomic.Bool
	closed atomic.Bool
	close  sync.Once
	cerr   error
	// limiter caps responses (Config.MaxResponsesPerSecond), sources each
	// source's share of it; nil = none. Only Serve's goroutine uses them.
	limiter *rate.Limiter
	sources *sourceLimiter
	// probe, while open, takes the responses the socket reads (probe.go).
	probe atomic.Pointer[Probe]
}

// New validates cfg and opens (or adopts) the server's socket, so Addr is
// known before Serve runs. Close releases the socket of a Server that is
// never served.
func New(cfg Config) (*Server, error) {
	software := cfg.Software
	if software == "" {
		software = DefaultSoftware
	}
	if len(software) > MaxSoftware || !utf8.ValidString(software) {
		closeConn(cfg.Conn)
		return nil, fmt.Errorf("stun: software %q is not UTF-8 of at most %d bytes", software, MaxSoftware)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	conn := cfg.Conn
	if conn != nil {
		if cfg.Listen.IsValid() {
			closeConn(conn)
			return nil, errors.New("stun: Config.Listen and Config.Conn are exclusive")
		}
	} else {
		laddr := &net.UDPAddr{Port: DefaultPort} // every address, dual stack
		if cfg.Listen.IsValid() {
			laddr = net.UDPAddrFromAddrPort(cfg.Listen)
		}
		var err error
		if conn, err = net.ListenUDP("udp", laddr); err != nil {
			return nil, fmt.Errorf("stun: listen on %s: %w", laddr, err)
		}
	}
	la, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		closeConn(conn)
		return nil, fmt.Errorf("stun: socket has local address %v, not UDP", conn.LocalAddr())
	}
	srv := &Server{
		conn: conn,
		addr: la.AddrPort(),
		log:  log,
		h:    newHandler(software, cfg.Classic),
	}
	if n := cfg.MaxResponsesPerSecond; n > 0 {
		srv.limiter = rate.NewLimiter(rate.Limit(n), 2*n)
		srv.sources = newSourceLimiter(max(1, float64(n)/sourceShare), maxSources, time.Now())
	}
	return srv, nil
}

func closeConn(c *net.UDPConn) {
	if c != nil {
		_ = c.Close()
	}
}

// Addr is the address the socket is bound to.
func (s *Server) Addr() netip.AddrPort { return s.addr }

// Stats returns a snapshot of the counters. Safe for concurrent use.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

// Close closes the socket; Serve, if running, returns. Idempotent.
func (s *Server) Close() error {
	s.close.Do(func() {
		s.closed.Store(true)
		if err := s.conn.Close(); err != nil {
			s.cerr = fmt.Errorf("stun: close %s: %w", s.addr, err)
		}
	})
	return s.cerr
}

// Serve answers requests until ctx ends or Close is called (it then
// returns nil) or the socket fails (it returns the error). Either way the socket is closed when
// Serve returns. Serve may be called once.
func (s *Server) Serve(ctx context.Context) error {
	if !s.served.CompareAndSwap(false, true) {
		return errors.New("stun: Serve called twice")
	}
	defer s.Close()
	// Unblock the read when ctx ends; the deadline is in the past.
	stop := context.AfterFunc(ctx, func() { _ = s.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	s.log.Info("stun serving", "addr", s.addr.String())
	buf := make([]byte, MaxRequest+1) // one spare byte detects oversize datagrams
	debug := s.log.Enabled(ctx, slog.LevelDebug)
	for {
		n, src, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || s.closed.Load() {
				st := s.Stats()
				s.log.Info("stun stopped", "addr", s.addr.String(), "requests", st.Requests,
					"responses", st.Responses, "malformed", st.Malformed, "dropped", st.DroppedBy())
				return nil
			}
			return fmt.Errorf("stun: read on %s: %w", s.addr, err)
		}
		s.stats.requests.Add(1)
		resp, reason := s.h.handle(buf[:n], src)
		if resp == nil {
			if reason == DropResponse {
				s.deliver(buf[:n], src) // still counted: never answered
			}
			s.stats.dropped[reason].Add(1)
			if debug {
				s.log.Debug("stun request dropped", "from", src.String(), "bytes", n, "reason", reason.String())
			}
			continue
		}
		if s.limiter != nil {
			now := time.Now()
			if !s.sources.allow(src.Addr(), now) {
				s.stats.dropped[DropSourceRateLimited].Add(1)
				continue
			}
			if !s.limiter.AllowN(now, 1) {
				s.stats.dropped[DropRateLimited].Add(1)
				continue
			}
		}
		// Counted before sending, so a client holding the answer sees it.
		s.stats.responses.Add(1)
		if _, err := s.conn.WriteToUDPAddrPort(resp, src); err != nil {
			s.stats.responses.Add(^uint64(0))
			s.stats.dropped[DropSendError].Add(1)
			if debug {
				s.log.Debug("stun response not sent", "to", src.String(), "err", err)
			}
		}
	}
}
