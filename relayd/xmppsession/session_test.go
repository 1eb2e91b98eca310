package xmppsession

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	for n, want := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		want *= time.Millisecond
		for range 50 {
			d := b.delay(n)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: delay %s outside [%s, %s]", n, d, want/2, want)
			}
		}
	}
	if d := b.delay(1000); d > time.Second {
		t.Fatalf("cap exceeded: %s", d)
	}
}

// componentServer is a minimal XEP-0114 server side speaking over real TCP:
// it checks the handshake and then runs script on the connection.
type componentServer struct {
	ln      net.Listener
	secret  string
	domain  string
	conns   chan *serverConn
	refused chan struct{}
}

type serverConn struct {
	net.Conn
	dec *xml.Decoder
}

func newComponentServer(t *testing.T, secret string) *componentServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &componentServer{ln: ln, secret: secret, domain: "relay.test", conns: make(chan *serverConn, 8), refused: make(chan struct{}, 8)}
	t.Cleanup(func() { ln.Close() })
	go s.accept()
	return s
}

func (s *componentServer) accept() {
	for n := 0; ; n++ {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.handshake(c, fmt.Sprintf("stream%d", n))
	}
}

func (s *componentServer) handshake(c net.Conn, streamID string) {
	dec := xml.NewDecoder(c)
	if _, err := nextStart(dec); err != nil { // <stream:stream>
		c.Close()
		return
	}
	fmt.Fprintf(c, `<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' from='%s' id='%s'>`, s.domain, streamID)
	start, err := nextStart(dec)
	if err != nil || start.Name.Local != "handshake" {
		c.Close()
		return
	}
	var digest string
	if err := dec.DecodeElement(&digest, &start); err != nil {
		c.Close()
		return
	}
	sum := sha1.Sum([]byte(streamID + s.secret))
	if strings.TrimSpace(digest) != hex.EncodeToString(sum[:]) {
		io.WriteString(c, `<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`)
		c.Close()
		s.refused <- struct{}{}
		return
	}
	io.WriteString(c, `<handshake/>`)
	s.conns <- &serverConn{Conn: c, dec: dec}
}

func nextStart(d *xml.Decoder) (xml.StartElement, error) {
	for {
		tok, err := d.Token()
		if err != nil {
			return xml.StartElement{}, err
		}
		if s, ok := tok.(xml.StartElement); ok {
			return s, nil
		}
	}
}

func (s *componentServer) next(t *testing.T, what string) *serverConn {
	t.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s", what)
		return nil
	}
}

// pingHandler answers every IQ get with an empty result.
type pingHandler struct{}

func (pingHandler) HandleXMPP(t xmlstream.TokenReadEncoder, start *xml.StartElement) error {
	iq, err := stanza.NewIQ(*start)
	if err != nil || iq.Type != stanza.GetIQ {
		return err
	}
	_, err = xmlstream.Copy(t, iq.Result(nil))
	return err
}

func newTestComponent(addr, secret string) *Session {
	c := NewComponent(ComponentConfig{Name: "test", Server: addr, Domain: jid.MustParse("relay.test"), Secret: secret,
		Backoff: Backoff{Min: 20 * time.Millisecond, Max: 100 * time.Millisecond}})
	c.SetHandler(pingHandler{})
	return c
}

func TestServesAndReconnects(t *testing.T) {
	srv := newComponentServer(t, "s3cret")
	c := newTestComponent(srv.ln.Addr().String(), "s3cret")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	conn := srv.next(t, "connection")
	// The component answers an IQ from the server side.
	io.WriteString(conn, `<iq type='get' id='p1' from='localhost' to='relay.test'><ping xmlns='urn:xmpp:ping'/></iq>`)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	start, err := nextStart(conn.dec)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	iq, _ := stanza.NewIQ(start)
	if iq.ID != "p1" || iq.Type != stanza.ResultIQ {
		t.Fatalf("answer %+v", iq)
	}
	// The session serves stanzas from the moment the handshake is done and
	// marks itself online right after (concurrently): the answer may come
	// first, as it did under qemu-user's scheduling.
	deadline := time.Now().Add(10 * time.Second)
	for st := c.Status(); st.State != StateOnline || st.Connects != 1; st = c.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("status %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Send works while online.
	if err := c.Send(ctx, stanza.IQ{ID: "x", Type: stanza.SetIQ, To: jid.MustParse("a@localhost")}.Wrap(nil)); err != nil {
		t.Fatalf("send: %v", err)
	}

	// The server dies: the component must come back by itself.
	conn.Close()
	second := srv.next(t, "reconnection")
	defer second.Close()
	deadline = time.Now().Add(10 * time.Second)
	for c.Status().Connects != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("status after reconnect %+v", c.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := c.Status(); st.LastError == "" {
		t.Fatalf("last error not recorded: %+v", st)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if st := c.Status(); st.State != StateStopped {
		t.Fatalf("state after stop %s", st.State)
	}
	if err := c.Send(context.Background(), stanza.IQ{ID: "y", Type: stanza.SetIQ}.Wrap(nil)); err != ErrOffline {
		t.Fatalf("send while stopped: %v", err)
	}
}

func TestWrongSecretKeepsRetrying(t *testing.T) {
	srv := newComponentServer(t, "right")
	c := newTestComponent(srv.ln.Addr().String(), "wrong")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	for i := range 3 {
		select {
		case <-srv.refused:
		case <-time.After(10 * time.Second):
			t.Fatalf("attempt %d never came", i+1)
		}
	}
	if st := c.Status(); st.Connects != 0 || !strings.Contains(st.LastError, "handshake") {
		t.Fatalf("status %+v", st)
	}
}

func TestServerDownAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c := newTestComponent(addr, "s")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := c.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := c.Status(); !strings.Contains(st.LastError, "connect") {
		t.Fatalf("status %+v", st)
	}
}
