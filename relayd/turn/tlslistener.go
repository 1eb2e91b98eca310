package turn

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// TURN over TLS: the listener given to pion hands over connections whose
// handshake is already done. pion would handshake them itself (within
// 10 s) but keeps a connection whose handshake failed open, and bounds
// neither how many handshakes one source holds nor how many run at once;
// on a router with 64 MB a slow-loris client must not be able to hold
// file descriptors and memory at will.
const (
	tlsHandshakeTimeout = 10 * time.Second
	tlsPerSource        = 32  // connections (handshaking or open) per source (sourceOf)
	tlsHandshakesMax    = 128 // handshakes in progress, all sources together
)

// tlsListener accepts TCP connections, runs their TLS handshakes
// concurrently, each within a deadline, and hands over those that
// completed.
type tlsListener struct {
	inner   net.Listener
	config  *tls.Config
	timeout time.Duration
	log     *slog.Logger
	refused func() // counts a connection refused for its source's bound

	ctx        context.Context // ends the handshakes in progress on Close
	cancel     context.CancelFunc
	ready      chan net.Conn
	handshakes chan struct{} // a slot per handshake in progress
	failed     chan struct{} // closed when the inner listener failed
	acceptErr  error         // why, set before failed is closed
	wg         sync.WaitGroup

	mu   sync.Mutex
	live map[netip.Addr]int
}

func newTLSListener(inner net.Listener, config *tls.Config, timeout time.Duration, log *slog.Logger, refused func()) *tlsListener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &tlsListener{inner: inner, config: config, timeout: timeout, log: log, refused: refused,
		ctx: ctx, cancel: cancel, ready: make(chan net.Conn), handshakes: make(chan struct{}, tlsHandshakesMax),
		failed: make(chan struct{}), live: map[netip.Addr]int{}}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// Accept returns the next connection whose handshake completed.
func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	case <-l.failed:
		return nil, l.acceptErr
	}
}

// Close stops accepting and ends the handshakes in progress; connections
// already handed over are their owner's to close.
func (l *tlsListener) Close() error {
	l.cancel()
	err := l.inner.Close()
	l.wg.Wait()
	return err
}

func (l *tlsListener) Addr() net.Addr { return l.inner.Addr() }

func (l *tlsListener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		raw, err := l.inner.Accept()
		if err != nil {
			if l.ctx.Err() != nil {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				l.acceptErr = err
				close(l.failed)
				return
			}
			// Out of file descriptors, say: wait and go on, as net/http
			// does, rather than stop serving TLS for good.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("TURN TLS accept", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-l.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		src := sourceOf(raw)
		if !l.acquire(src) {
			raw.Close()
			l.refused()
			continue
		}
		select {
		case l.handshakes <- struct{}{}:
		case <-l.ctx.Done():
			raw.Close()
			l.release(src)
			return
		}
		l.wg.Add(1)
		go l.handshake(raw, src)
	}
}

// handshake completes raw's TLS handshake within the timeout, or closes
// it.
func (l *tlsListener) handshake(raw net.Conn, src netip.Addr) {
	defer l.wg.Done()
	conn := &sourceConn{Conn: tls.Server(raw, l.config), release: func() { l.release(src) }}
	ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
	err := conn.Conn.(*tls.Conn).HandshakeContext(ctx)
	cancel()
	<-l.handshakes
	if err != nil {
		l.log.Debug("TURN TLS handshake failed", "from", raw.RemoteAddr().String(), "err", err)
		conn.Close()
		return
	}
	select {
	case l.ready <- conn:
	case <-l.ctx.Done():
		conn.Close()
	}
}

// acquire counts a connection from src, unless src holds its bound.
func (l *tlsListener) acquire(src netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.live[src] >= tlsPerSource {
		return false
	}
	l.live[src]++
	return true
}

func (l *tlsListener) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.live[src]--; l.live[src] <= 0 {
		delete(l.live, src)
	}
}

// sourceOf is the source a connection counts against (sourceKey).
func sourceOf(c net.Conn) netip.Addr {
	a, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	return sourceKey(a.AddrPort().Addr())
}

// sourceConn is a TLS connection that gives its source's count back when
// closed (once, however often pion closes it).
type sourceConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *sourceConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
