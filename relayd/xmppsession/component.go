// Package xmppsession keeps relayd's XMPP sessions up: it connects,
// authenticates, serves incoming stanzas with a handler, and reconnects
// with capped, jittered exponential backoff whenever the server goes away.
// A session never gives up while its context lives.
package xmppsession

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"mellium.im/xmpp"
	"mellium.im/xmpp/component"
	"mellium.im/xmpp/jid"
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
	return half + rand.N(d-half+1)
}

// stableAfter is how long a connection must last for the backoff to start
// again from Min: a server that accepts and drops at once must not be
// hammered.
const stableAfter = 30 * time.Second

// Component is an XEP-0114 external component session.
type Component struct {
	name    string
	server  string
	domain  jid.JID
	secret  []byte
	handler xmpp.Handler
	backoff Backoff
	log     *slog.Logger

	mu     sync.Mutex
	sess   *xmpp.Session
	status Status
}

// ComponentConfig configures a Component.
type ComponentConfig struct {
	Name    string // for logs and status
	Server  string // host:port of the server's component listener
	Domain  jid.JID
	Secret  string
	Backoff Backoff
	Logger  *slog.Logger
}

// NewComponent returns a component session; Run connects it. The handler is
// set with SetHandler before Run (it usually needs the Component itself to
// send events).
func NewComponent(cfg ComponentConfig) *Component {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Component{
		name: cfg.Name, server: cfg.Server, domain: cfg.Domain.Domain(), secret: []byte(cfg.Secret),
		backoff: cfg.Backoff, log: cfg.Logger.With("session", cfg.Name, "server", cfg.Server),
		status: Status{Name: cfg.Name, State: StateStopped, Since: time.Now()},
	}
}

// SetHandler sets the handler of incoming stanzas. Call it before Run.
func (c *Component) SetHandler(h xmpp.Handler) { c.handler = h }

// Addr is the component's JID.
func (c *Component) Addr() jid.JID { return c.domain }

// Status returns the session's current status.
func (c *Component) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

func (c *Component) setState(s State, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status.State, c.status.Since = s, time.Now()
	if err != nil {
		c.status.LastError = err.Error()
	}
	if s == StateOnline {
		c.status.Connects++
	}
}

// Send sends the first element of r on the current connection.
func (c *Component) Send(ctx context.Context, r xml.TokenReader) error {
	c.mu.Lock()
	sess := c.sess
	c.mu.Unlock()
	if sess == nil {
		return ErrOffline
	}
	return sess.Send(ctx, r)
}

// Run keeps the session connected until ctx is cancelled; it returns nil
// then. Every failure is logged and followed by a backoff and a new attempt.
func (c *Component) Run(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		c.setState(StateConnecting, nil)
		began := time.Now()
		err := c.serveOnce(ctx)
		if ctx.Err() != nil {
			c.setState(StateStopped, nil)
			return nil
		}
		if time.Since(began) >= stableAfter {
			attempt = 0
		}
		wait := c.backoff.delay(attempt)
		c.setState(StateBackoff, err)
		c.log.Warn("xmpp session lost, reconnecting", "err", err, "retry_in", wait.Round(time.Millisecond).String())
		select {
		case <-ctx.Done():
			c.setState(StateStopped, nil)
			return nil
		case <-time.After(wait):
		}
	}
}

// handshakeTimeout bounds connecting and the XEP-0114 handshake.
const handshakeTimeout = 15 * time.Second

// serveOnce connects, handshakes and serves until the connection ends or
// ctx is cancelled. It always returns a non-nil error describing why the
// session ended.
func (c *Component) serveOnce(ctx context.Context) error {
	hsCtx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	// Kernel keepalives find a server that vanished without closing the
	// connection (power cut, network gone) within about a minute.
	d := net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 10 * time.Second, Count: 3}}
	conn, err := d.DialContext(hsCtx, "tcp", c.server)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	// Unblock the handshake if ctx ends while it runs.
	stop := context.AfterFunc(hsCtx, func() { conn.SetDeadline(time.Now()) })
	sess, err := component.NewSession(hsCtx, c.domain, c.secret, conn)
	if !stop() {
		if err == nil {
			err = hsCtx.Err()
		}
	}
	if err != nil {
		return fmt.Errorf("component handshake as %s: %w", c.domain, err)
	}
	conn.SetDeadline(time.Time{})

	c.mu.Lock()
	c.sess = sess
	c.mu.Unlock()
	c.setState(StateOnline, nil)
	c.log.Info("xmpp component online", "domain", c.domain.String())
	defer func() {
		c.mu.Lock()
		c.sess = nil
		c.mu.Unlock()
	}()

	served := make(chan error, 1)
	go func() { served <- sess.Serve(c.handler) }()
	select {
	case err := <-served:
		if err == nil {
			err = errors.New("server closed the stream")
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
