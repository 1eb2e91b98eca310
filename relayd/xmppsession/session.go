// Package xmppsession keeps relayd's XMPP sessions up: it connects,
// authenticates (as an XEP-0114 component or as a client account), serves
// incoming stanzas with a handler, and reconnects with capped, jittered
// exponential backoff whenever the server goes away. A session never gives
// up while its context lives.
package xmppsession

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"sync"
	"time"

	"mellium.im/xmpp"
	"mellium.im/xmpp/component"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// ErrOffline is returned by Send while the session is not connected.
var ErrOffline = errors.New("xmpp session offline")

// State is where a session is in its life cycle.
type State string

const (
	StateConnecting State = "connecting"
	StateOnline     State = "online"
	StateBackoff    State = "backoff" // waiting before the next attempt
	StateStopped    State = "stopped"
)

// States lists every State, in the order of a session's life.
func States() []State { return []State{StateConnecting, StateOnline, StateBackoff, StateStopped} }

// Status is a session's state for the rest of the program (logs, metrics,
// provisioning API).
type Status struct {
	Name      string
	State     State
	Since     time.Time
	LastError string
	Connects  int // successful connections so far
}

// Backoff bounds the delay between reconnection attempts.
type Backoff struct {
	Min, Max time.Duration
}

// delay is the wait before attempt n (0-based): Min·2ⁿ capped at Max, with
// jitter in [d/2, d] so many relays do not reconnect in lockstep after a
// server restart.
func (b Backoff) delay(n int) time.Duration {
	d := b.Min
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	half := d / 2
	return half + mrand.N(d-half+1)
}

// stableAfter is how long a connection must last for the backoff to start
// again from Min: a server that accepts and drops at once must not be
// hammered.
const stableAfter = 30 * time.Second

// connector opens one authenticated session; conn is closed to end it.
type connector func(ctx context.Context) (sess *xmpp.Session, conn net.Conn, err error)

// Session is one XMPP session of the relay, kept up by Run.
type Session struct {
	name    string
	kind    string // "component" or "client", for logs
	addr    jid.JID
	connect connector
	handler xmpp.Handler
	// onOnline runs once per connection, while the session is served
	// (roster fetch, initial presence); its failure ends the connection.
	onOnline func(ctx context.Context, s *xmpp.Session) error
	backoff  Backoff
	log      *slog.Logger

	mu     sync.Mutex
	sess   *xmpp.Session
	status Status
}

func newSession(name, kind string, addr jid.JID, backoff Backoff, log *slog.Logger, connect connector) *Session {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Session{
		name: name, kind: kind, addr: addr, connect: connect, backoff: backoff,
		log:    log.With("session", name),
		status: Status{Name: name, State: StateStopped, Since: time.Now()},
	}
}

// SetHandler sets the handler of incoming stanzas. Call it before Run.
func (s *Session) SetHandler(h xmpp.Handler) { s.handler = h }

// SetOnOnline sets a hook run after every (re)connection, concurrently
// with serving (so it may send IQs and await their answers). Call it
// before Run.
func (s *Session) SetOnOnline(f func(ctx context.Context, sess *xmpp.Session) error) { s.onOnline = f }

// Addr is the session's address: the component domain, or the account's
// full JID while connected (its bare JID otherwise).
func (s *Session) Addr() jid.JID {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess != nil {
		return s.sess.LocalAddr()
	}
	return s.addr
}

// Name is the session's configured name.
func (s *Session) Name() string { return s.name }

// Status returns the session's current status.
func (s *Session) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

func (s *Session) setState(st State, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.State, s.status.Since = st, time.Now()
	if err != nil {
		s.status.LastError = err.Error()
	}
	if st == StateOnline {
		s.status.Connects++
	}
}

// Send sends the first element of r on the current connection.
func (s *Session) Send(ctx context.Context, r xml.TokenReader) error {
	s.mu.Lock()
	sess := s.sess
	s.mu.Unlock()
	if sess == nil {
		return ErrOffline
	}
	return sess.Send(ctx, r)
}

// Run keeps the session connected until ctx is cancelled; it returns nil
// then. Every failure is logged and followed by a backoff and a new attempt.
func (s *Session) Run(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		s.setState(StateConnecting, nil)
		began := time.Now()
		err := s.serveOnce(ctx)
		if ctx.Err() != nil {
			s.setState(StateStopped, nil)
			return nil
		}
		if time.Since(began) >= stableAfter {
			attempt = 0
		}
		wait := s.backoff.delay(attempt)
		s.setState(StateBackoff, err)
		s.log.Warn("xmpp session lost, reconnecting", "err", err, "retry_in", wait.Round(time.Millisecond).String())
		select {
		case <-ctx.Done():
			s.setState(StateStopped, nil)
			return nil
		case <-time.After(wait):
		}
	}
}

// handshakeTimeout bounds connecting, TLS and authentication.
const handshakeTimeout = 15 * time.Second

// keepalive is the dialer every session uses: kernel keepalives find a
// server that vanished without closing the connection (power cut, network
// gone) within about a minute.
var keepalive = net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 10 * time.Second, Count: 3}

// serveOnce connects and serves until the connection ends or ctx is
// cancelled. It always returns a non-nil error saying why it ended.
func (s *Session) serveOnce(ctx context.Context) error {
	hsCtx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	sess, conn, err := s.connect(hsCtx)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close()

	s.mu.Lock()
	s.sess = sess
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.sess = nil
		s.mu.Unlock()
	}()

	served := make(chan error, 1)
	go func() { served <- sess.Serve(s.handler) }()
	hookErr := make(chan error, 1)
	if s.onOnline != nil {
		hookCtx, cancelHook := context.WithTimeout(ctx, handshakeTimeout)
		defer cancelHook()
		go func() { hookErr <- s.onOnline(hookCtx, sess) }()
	} else {
		hookErr <- nil
	}
	online := false
	for {
		select {
		case err := <-hookErr:
			if err != nil {
				sess.Close()
				conn.Close()
				<-served
				return fmt.Errorf("after login: %w", err)
			}
			online = true
			s.setState(StateOnline, nil)
			s.log.Info("xmpp "+s.kind+" online", "address", sess.LocalAddr().String())
		case err := <-served:
			if err == nil {
				err = errors.New("server closed the stream")
			}
			if !online {
				return fmt.Errorf("serve before online: %w", err)
			}
			return fmt.Errorf("serve: %w", err)
		case <-ctx.Done():
			// Close the stream politely, then the connection; Serve returns.
			// (No SetCloseDeadline: it races with Serve inside mellium.)
			sess.Close()
			conn.Close()
			<-served
			return ctx.Err()
		}
	}
}

// ComponentConfig configures an XEP-0114 component session.
type ComponentConfig struct {
	Name    string // for logs and status
	Server  string // host:port of the server's component listener
	Domain  jid.JID
	Secret  string
	Backoff Backoff
	Logger  *slog.Logger
	// MaxStanza caps one incoming stanza, in bytes; 0 = DefaultMaxStanza.
	// A larger one ends the connection with a policy-violation stream
	// error, and the session reconnects.
	MaxStanza int
}

// NewComponent returns an external component session; Run connects it.
func NewComponent(cfg ComponentConfig) *Session {
	domain := cfg.Domain.Domain()
	secret := []byte(cfg.Secret)
	return newSession(cfg.Name, "component", domain, cfg.Backoff, cfg.Logger, func(ctx context.Context) (*xmpp.Session, net.Conn, error) {
		d := net.Dialer{KeepAliveConfig: keepalive}
		conn, err := d.DialContext(ctx, "tcp", cfg.Server)
		if err != nil {
			return nil, nil, fmt.Errorf("connect: %w", err)
		}
		// Every incoming element is size-checked, from the handshake on.
		conn = newLimitedConn(conn, cfg.MaxStanza)
		// Unblock the handshake if ctx ends while it runs.
		stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
		sess, err := component.NewSession(ctx, domain, secret, conn)
		if !stop() && err == nil {
			err = ctx.Err()
		}
		if err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("component handshake as %s: %w", domain, err)
		}
		conn.SetDeadline(time.Time{})
		return sess, conn, nil
	})
}

// Query sends an IQ get with payload to `to` on the current connection and
// decodes the answer's payload into v; an error answer is returned as a
// stanza.Error. It fails with ErrOffline while the session is down.
func (s *Session) Query(ctx context.Context, to jid.JID, payload xml.TokenReader, v any) error {
	return s.iq(ctx, stanza.GetIQ, to, payload, v)
}

// Set is Query with an IQ set (publish-subscribe requests, for one).
func (s *Session) Set(ctx context.Context, to jid.JID, payload xml.TokenReader, v any) error {
	return s.iq(ctx, stanza.SetIQ, to, payload, v)
}

func (s *Session) iq(ctx context.Context, typ stanza.IQType, to jid.JID, payload xml.TokenReader, v any) error {
	s.mu.Lock()
	sess := s.sess
	s.mu.Unlock()
	if sess == nil {
		return ErrOffline
	}
	id, err := randomID()
	if err != nil {
		return err
	}
	iq := stanza.IQ{ID: id, Type: typ, To: to, From: sess.LocalAddr()}
	if err := sess.UnmarshalIQElement(ctx, payload, iq, v); err != nil {
		return fmt.Errorf("iq %s to %s: %w", typ, to, err)
	}
	return nil
}

func randomID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "q-" + hex.EncodeToString(b[:]), nil
}
