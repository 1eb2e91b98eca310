package provision

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "no-referrer",
	"Cache-Control":           "no-store",
	"X-Frame-Options":         "DENY",
}

func checkSecurityHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	for k, want := range securityHeaders {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %s = %q, want %q", what, k, got, want)
		}
	}
}

func bearerOf(t *testing.T, e *env) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(e.dir, "state", TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return "Bearer " + strings.TrimSpace(string(raw))
}

// The page and its files are served without a token (they hold no data),
// with the right types and every security header, on TCP and the socket.
func TestWebServedWithoutAuth(t *testing.T) {
	e := startAPI(t, "", APIOptions{TCP: "127.0.0.1:0"}, 0, -1)
	for _, c := range []struct{ path, ctype, contains string }{
		{"/", "text/html; charset=utf-8", `<script src="/static/app.js" defer></script>`},
		{"/static/app.js", "text/javascript; charset=utf-8", "/v1/status"},
		{"/static/charts.js", "text/javascript; charset=utf-8", "createElementNS"},
		{"/static/app.css", "text/css; charset=utf-8", "@media"},
		{"/static/icon.svg", "image/svg+xml", "<svg"},
	} {
		for _, base := range []string{e.tcpURL, ""} {
			r := e.do(t, "GET", base+c.path, "", nil)
			if r.status != 200 || r.header.Get("Content-Type") != c.ctype || !strings.Contains(string(r.body), c.contains) {
				t.Errorf("GET %s%s: %d %q %.80s", base, c.path, r.status, r.header.Get("Content-Type"), r.body)
			}
			if n, _ := strconv.Atoi(r.header.Get("Content-Length")); n != len(r.body) {
				t.Errorf("GET %s%s: Content-Length %q for %d bytes", base, c.path, r.header.Get("Content-Length"), len(r.body))
			}
			checkSecurityHeaders(t, "GET "+c.path, r.header)
		}
	}
	r := e.do(t, "HEAD", e.tcpURL+"/", "", nil)
	if r.status != 200 || len(r.body) != 0 || r.header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Errorf("HEAD /: %s %v", r, r.header)
	}
	// The page asks for nothing outside its origin and runs no inline code.
	page := string(e.do(t, "GET", e.tcpURL+"/", "", nil).body)
	for _, bad := range []string{"http://", "https://", "<style", "style=", "onclick", "onload", "<script>"} {
		if strings.Contains(page, bad) {
			t.Errorf("index.html contains %q", bad)
		}
	}
	// The API itself still needs the token.
	if r := e.do(t, "GET", e.tcpURL+"/v1/status", "", nil); r.status != 401 {
		t.Errorf("GET /v1/status without token: %s", r)
	}
}

func TestWebUnknownAndMethods(t *testing.T) {
	e := startAPI(t, "", APIOptions{TCP: "127.0.0.1:0"}, 0, -1)
	for _, p := range []string{"/static/", "/static/nope.js", "/static/app.js/x", "/static/../web.go", "/static/%2e%2e/web.go", "/static/APP.JS"} {
		r := e.do(t, "GET", e.tcpURL+p, "", nil)
		if r.status != 404 || decodeErr(t, r).Code != CodeNotFound {
			t.Errorf("GET %s: %s", p, r)
		}
		checkSecurityHeaders(t, "404 "+p, r.header)
	}
	before, applies := e.fileBytes(t), e.d.applyCount()
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH"} {
		r := e.do(t, m, e.tcpURL+"/", "{}", jsonCT)
		if r.status != 405 || r.header.Get("Allow") != "GET, HEAD" || decodeErr(t, r).Code != CodeMethodNotAllowed {
			t.Errorf("%s /: %s Allow=%q", m, r, r.header.Get("Allow"))
		}
	}
	e.unchanged(t, before, applies)
	// The Host check still guards the page (DNS rebinding).
	if r := e.do(t, "GET", e.tcpURL+"/", "", map[string]string{"Host": "evil.example"}); r.status != 421 {
		t.Errorf("page under a foreign Host: %s", r)
	}
	// A navigation from another site (a link on the router's page) may
	// open the page, never use the API.
	nav := map[string]string{"Sec-Fetch-Site": "cross-site", "Referer": "http://192.168.1.1/"}
	if r := e.do(t, "GET", e.tcpURL+"/", "", nav); r.status != 200 {
		t.Errorf("cross-site navigation to the page: %s", r)
	}
	if r := e.do(t, "GET", e.tcpURL+"/v1/status", "", withHeaders(nav, "Authorization", bearerOf(t, e))); r.status != 403 {
		t.Errorf("cross-site API call: %s", r)
	}
}

// The page's own calls, with the headers Chromium sends for same-origin
// fetches (Origin only on writes, Sec-Fetch-Site same-origin, no Referer
// under the page's no-referrer policy), pass the origin checks.
func TestWebSameOriginFetches(t *testing.T) {
	e := startAPI(t, "", APIOptions{TCP: "127.0.0.1:0"}, 0, -1)
	bearer := bearerOf(t, e)
	origin := e.tcpURL // http://127.0.0.1:port
	get := map[string]string{"Authorization": bearer, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
	for _, p := range []string{"/v1/status", "/v1/channels", "/v1/usage", "/v1/config"} {
		if r := e.do(t, "GET", e.tcpURL+p, "", get); r.status != 200 {
			t.Errorf("GET %s: %s", p, r)
		}
	}
	r := e.do(t, "GET", e.tcpURL+"/v1/config", "", get)
	write := withHeaders(get, "Origin", origin, "Content-Type", "application/merge-patch+json", "If-Match", r.header.Get("ETag"))
	if r := e.do(t, "PATCH", e.tcpURL+"/v1/config", `{"ports": {"min": 41000, "max": 41099}}`, write); r.status != 200 {
		t.Fatalf("same-origin PATCH: %s", r)
	}
	if r := e.do(t, "DELETE", e.tcpURL+"/v1/channels/aa01", "", withHeaders(get, "Origin", origin)); r.status != 204 {
		t.Errorf("same-origin DELETE: %s", r)
	}
	if r := e.do(t, "DELETE", e.tcpURL+"/v1/channels/bb02", "", withHeaders(get, "Origin", "http://127.0.0.1:1")); r.status != 403 {
		t.Errorf("DELETE from another port's origin: %s", r)
	}
}

// fakeConn is a TCP connection as ConnContext sees it.
type fakeConn struct {
	net.Conn
	local, remote net.Addr
}

func (c fakeConn) LocalAddr() net.Addr  { return c.local }
func (c fakeConn) RemoteAddr() net.Addr { return c.remote }

// A listener on all interfaces answers to the address the browser used,
// as an IP literal: a donor opening http://192.168.1.2:8787/ on a phone.
// Names still need APIOptions.Hosts, and other addresses stay refused.
func TestHostIsTheConnectionsAddress(t *testing.T) {
	a := NewAPI(newFakeDaemon(), NewStore(filepath.Join(t.TempDir(), "x.json")), APIOptions{TCP: "0.0.0.0:8787", StateDir: t.TempDir()})
	tok, err := a.RotateToken()
	if err != nil {
		t.Fatal(err)
	}
	serve := func(local, host, path string, hdr map[string]string) int {
		la := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(local))
		conn := fakeConn{local: la, remote: &net.TCPAddr{IP: net.IPv4(192, 168, 1, 50), Port: 50000}}
		req := httptest.NewRequest("GET", "http://"+host+path, nil)
		req.Host = host
		req.Header.Set("Authorization", "Bearer "+tok)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		req = req.WithContext(a.ConnContext(req.Context(), conn))
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, req)
		return rec.Code
	}
	for _, c := range []struct {
		local, host string
		want        int
	}{
		{"192.168.1.2:8787", "192.168.1.2:8787", 200},
		{"[::ffff:192.168.1.2]:8787", "192.168.1.2:8787", 200},
		{"[fd00::2]:8787", "[fd00::2]:8787", 200},
		{"192.168.1.2:8787", "192.168.1.3:8787", 421},
		{"192.168.1.2:8787", "relay.lan:8787", 421},
		{"192.168.1.2:8787", "0.0.0.0:8787", 421},
	} {
		for _, p := range []string{"/", "/v1/status"} {
			if got := serve(c.local, c.host, p, nil); got != c.want {
				t.Errorf("connection to %s, Host %s, GET %s: %d, want %d", c.local, c.host, p, got, c.want)
			}
		}
	}
	if got := serve("192.168.1.2:8787", "192.168.1.2:8787", "/v1/status", map[string]string{"Origin": "http://192.168.1.2:8787"}); got != 200 {
		t.Errorf("same-origin call on the LAN address: %d", got)
	}
	if got := serve("192.168.1.2:8787", "192.168.1.2:8787", "/v1/status", map[string]string{"Origin": "http://evil.example"}); got != 403 {
		t.Errorf("cross-origin call on the LAN address: %d", got)
	}
}
