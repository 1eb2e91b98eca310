package xmppsession

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmpp"
	"mellium.im/xmpp/dial"
	"mellium.im/xmpp/jid"
)

// ClientConfig configures a client-account session.
type ClientConfig struct {
	Name     string
	JID      jid.JID // the account; the server binds a resource
	Password string
	// Server is host:port to dial; empty = DNS SRV of the JID's domain
	// (then the domain itself on 5222).
	Server string
	// DirectTLS speaks TLS from the first byte (XEP-0368) instead of
	// STARTTLS.
	DirectTLS bool
	// RootCAs are trusted instead of the system roots (private
	// deployments: the service's ca_file); nil = system roots. The
	// certificate is always verified.
	RootCAs *x509.CertPool
	// AllowPlain offers SASL PLAIN (inside TLS) after SCRAM; without it
	// the password itself never leaves the relay.
	AllowPlain bool
	Backoff    Backoff
	Logger     *slog.Logger
	// MaxStanza caps one incoming stanza, in bytes; 0 = DefaultMaxStanza.
	MaxStanza int
}

// NewClient returns a client-account session; Run connects it. TLS is
// mandatory and verified; SASL prefers SCRAM-SHA-256, then SCRAM-SHA-1
// (their -PLUS channel-binding forms first when the server offers them),
// and uses PLAIN only when AllowPlain says so, and then only inside TLS.
func NewClient(cfg ClientConfig) (*Session, error) {
	tlsCfg := &tls.Config{ServerName: cfg.JID.Domainpart(), MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs}
	account := cfg.JID.Bare()
	// Channel binding (SCRAM-*-PLUS) is used when the server offers it.
	// Servers that bind to another TLS channel identity than ours (e.g.
	// tls-unique vs tls-exporter under TLS 1.3) refuse it; the session then
	// logs in with plain SCRAM, still inside verified TLS.
	var noPlus atomic.Bool
	// raw is the connection before TLS: STARTTLS moves the size check
	// from it to the TLS connection.
	features := func(raw *limitedConn) []xmpp.StreamFeature {
		mechs := mechanisms(!noPlus.Load(), cfg.AllowPlain)
		f := []xmpp.StreamFeature{
			// mellium offers SASL only once the stream is secure, so
			// PLAIN can never go out in the clear.
			xmpp.SASL("", cfg.Password, mechs...),
			xmpp.BindResource(),
		}
		if !cfg.DirectTLS {
			f = append([]xmpp.StreamFeature{limitedStartTLS(xmpp.StartTLS(tlsCfg), raw, cfg.MaxStanza)}, f...)
		}
		return f
	}
	return newSession(cfg.Name, "client", account, cfg.Backoff, cfg.Logger, func(ctx context.Context) (*xmpp.Session, net.Conn, error) {
		conn, err := dialClient(ctx, cfg.Server, account, cfg.DirectTLS, tlsCfg)
		if err != nil {
			return nil, nil, err
		}
		// Every incoming element is size-checked, from the first byte
		// (after TLS: inside it).
		var state xmpp.SessionState
		if _, ok := conn.(*tls.Conn); ok {
			state = xmpp.Secure // direct TLS; mellium sees only the wrapper
		}
		lc := newLimitedConn(conn, cfg.MaxStanza)
		conn = lc
		stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
		// xmpp.NewClientSession, with the session state.
		sess, err := xmpp.NewSession(ctx, account.Domain(), account, conn, state, xmpp.NewNegotiator(
			func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
				return xmpp.StreamConfig{Features: features(lc)}
			}))
		if !stop() && err == nil {
			err = ctx.Err()
		}
		if err != nil {
			conn.Close()
			if strings.Contains(strings.ToLower(err.Error()), "channel binding") && !noPlus.Swap(true) {
				err = fmt.Errorf("%w (the server refused channel binding: next attempts use SCRAM without -PLUS)", err)
			}
			return nil, nil, fmt.Errorf("log in as %s: %w", account, err)
		}
		conn.SetDeadline(time.Time{})
		return sess, conn, nil
	}), nil
}

// mechanisms are the SASL mechanisms offered, best first: SCRAM-SHA-256
// and SCRAM-SHA-1, their channel-binding forms first when plus, then PLAIN
// only when plain (PLAIN hands the password itself to the server).
func mechanisms(plus, plain bool) []sasl.Mechanism {
	var m []sasl.Mechanism
	if plus {
		m = append(m, sasl.ScramSha256Plus)
	}
	m = append(m, sasl.ScramSha256)
	if plus {
		m = append(m, sasl.ScramSha1Plus)
	}
	m = append(m, sasl.ScramSha1)
	if plain {
		m = append(m, sasl.Plain)
	}
	return m
}

func dialClient(ctx context.Context, server string, account jid.JID, direct bool, tlsCfg *tls.Config) (net.Conn, error) {
	if server == "" {
		d := dial.Dialer{Dialer: net.Dialer{KeepAliveConfig: keepalive}, NoTLS: !direct, TLSConfig: tlsCfg}
		conn, err := d.Dial(ctx, "tcp", account)
		if err != nil {
			return nil, fmt.Errorf("connect to %s: %w", account.Domain(), err)
		}
		return conn, nil
	}
	d := net.Dialer{KeepAliveConfig: keepalive}
	conn, err := d.DialContext(ctx, "tcp", server)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if !direct {
		return conn, nil
	}
	tc := tls.Client(conn, tlsCfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("direct TLS to %s: %w", server, err)
	}
	return tc, nil
}

// limitedStartTLS is f (STARTTLS) handing the size check of incoming
// elements from the plain connection raw to the TLS connection.
func limitedStartTLS(f xmpp.StreamFeature, raw *limitedConn, max int) xmpp.StreamFeature {
	negotiate := f.Negotiate
	f.Negotiate = func(ctx context.Context, s *xmpp.Session, data any) (xmpp.SessionState, io.ReadWriter, error) {
		mask, rw, err := negotiate(ctx, s, data)
		if err != nil || rw == nil {
			return mask, rw, err
		}
		tc, ok := rw.(net.Conn)
		if !ok {
			return mask, nil, fmt.Errorf("starttls: a %T is no net.Conn", rw)
		}
		// No TLS byte has been read yet: the handshake starts with the
		// restarted stream.
		raw.passThrough.Store(true)
		return mask, newLimitedConn(tc, max), nil
	}
	return f
}
