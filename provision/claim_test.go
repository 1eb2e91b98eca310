package provision

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

func claimDoc(t *testing.T, r result) ClaimDocument {
	t.Helper()
	var d ClaimDocument
	if err := json.Unmarshal(r.body, &d); err != nil {
		t.Fatalf("claim answer %s: %v", r, err)
	}
	return d
}

func TestClaimOnceThenTokenOnly(t *testing.T) {
	e := startAPI(t, "", APIOptions{TCP: "127.0.0.1:0"}, 0, -1)
	if r := e.do(t, "GET", e.tcpURL+"/v1/claim", "", nil); r.status != 200 || claimDoc(t, r).Claimed {
		t.Fatalf("fresh relay: %s", r)
	}
	// A page of another site cannot claim it through the donor's browser.
	if r := e.do(t, "POST", e.tcpURL+"/v1/claim", "", withHeaders(nil, "Origin", "http://evil.example")); r.status != 403 {
		t.Fatalf("cross-site claim: %s", r)
	}
	r := e.do(t, "POST", e.tcpURL+"/v1/claim", "", nil)
	doc := claimDoc(t, r)
	if r.status != 200 || !doc.Claimed || len(doc.Token) < 40 {
		t.Fatalf("claim: %s", r)
	}
	c := NewTCPClient(e.tcpURL, doc.Token)
	defer c.Close()
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatalf("the claimed token does not work: %v", err)
	}
	r = e.do(t, "POST", e.tcpURL+"/v1/claim", "", nil)
	if r.status != 409 || decodeErr(t, r).Code != CodeAlreadyClaimed || claimDoc(t, r).Token != "" {
		t.Fatalf("second claim: %s", r)
	}
	if r := e.do(t, "GET", e.tcpURL+"/v1/claim", "", nil); !claimDoc(t, r).Claimed {
		t.Fatalf("after the claim: %s", r)
	}
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatalf("a refused second claim changed the token: %v", err)
	}
	// Over the unix socket there is nothing to claim.
	if r := e.do(t, "POST", "/v1/claim", "", nil); r.status != 404 {
		t.Fatalf("claim over the unix socket: %s", r)
	}
}

func TestUsingTheTokenEndsClaiming(t *testing.T) {
	e := startAPI(t, "", APIOptions{TCP: "127.0.0.1:0"}, 0, -1)
	raw, err := os.ReadFile(filepath.Join(e.dir, "state", TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	c := NewTCPClient(e.tcpURL, string(raw[:len(raw)-1]))
	defer c.Close()
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := e.do(t, "POST", e.tcpURL+"/v1/claim", "", nil); r.status != 409 {
		t.Fatalf("claim after the token was used: %s", r)
	}
}

func TestLocalNetwork(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1": true, "::1": true, "192.168.1.20": true, "10.1.2.3": true, "172.16.0.9": true,
		"fd00::5": true, "fe80::1": true, "169.254.3.4": true, "::ffff:192.168.1.7": true,
		"203.0.113.9": false, "8.8.8.8": false, "2001:db8::1": false, "100.64.0.1": false,
	} {
		if got := localNetwork(netip.MustParseAddr(addr)); got != want {
			t.Errorf("localNetwork(%s) = %v, want %v", addr, got, want)
		}
	}
}

// connList hands out connections with chosen remote addresses (the
// filtering logic; the real listener is exercised by the tests above).
type connList struct {
	conns []net.Conn
}

func (l *connList) Accept() (net.Conn, error) {
	if len(l.conns) == 0 {
		return nil, errors.New("closed")
	}
	c := l.conns[0]
	l.conns = l.conns[1:]
	return c, nil
}
func (l *connList) Close() error   { return nil }
func (l *connList) Addr() net.Addr { return &net.TCPAddr{} }

type remoteConn struct {
	net.Conn
	remote string
	closed bool
}

func (c *remoteConn) RemoteAddr() net.Addr {
	ap := netip.MustParseAddrPort(c.remote)
	return net.TCPAddrFromAddrPort(ap)
}
func (c *remoteConn) Close() error { c.closed = true; return nil }

func TestLocalOnlyClosesOutsiders(t *testing.T) {
	outsider, lan := &remoteConn{remote: "203.0.113.9:5000"}, &remoteConn{remote: "192.168.1.20:5000"}
	var refused atomic.Uint64
	l := localOnly{Listener: &connList{conns: []net.Conn{outsider, lan}}, log: slog.New(slog.DiscardHandler), refused: &refused}
	c, err := l.Accept()
	if err != nil || c != lan {
		t.Fatalf("accepted %v %v, want the LAN connection", c, err)
	}
	if !outsider.closed || lan.closed || refused.Load() != 1 {
		t.Fatalf("outsider closed %v, lan closed %v, refused %d", outsider.closed, lan.closed, refused.Load())
	}
}
