package provision

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jnrelay/jnrelay/internal/atomicfile"
)

// role is what a caller may do.
type role int

const (
	roleNone  role = iota
	roleRead       // GET and HEAD
	roleWrite      // everything
)

// peer is who is at the other end of a connection, recorded once per
// connection by ConnContext.
type peer struct {
	unix   bool     // came in on a unix socket
	local  string   // the socket path (unix) or local address
	remote string   // remote address (TCP)
	uid    uint32   // unix only
	gid    uint32   // unix only
	groups []uint32 // unix only: supplementary groups
	err    error    // unix only: credentials could not be read
}

func (p *peer) String() string {
	if p.unix {
		if p.err != nil {
			return "unix peer (unidentified)"
		}
		return "uid=" + strconv.FormatUint(uint64(p.uid), 10)
	}
	return "tcp " + p.remote
}

type peerKey struct{}

// ConnContext records who a connection comes from; set it as the
// http.Server's ConnContext when serving the API with your own server
// (Serve does). Unix-socket connections are identified by SO_PEERCRED;
// any other connection must authenticate with the bearer token.
func (a *API) ConnContext(ctx context.Context, c net.Conn) context.Context {
	p := &peer{remote: c.RemoteAddr().String(), local: c.LocalAddr().String()}
	if uc, ok := c.(*net.UnixConn); ok {
		p.unix = true
		p.uid, p.gid, p.groups, p.err = peerCredentials(uc)
	}
	return context.WithValue(ctx, peerKey{}, p)
}

func peerFrom(ctx context.Context) *peer {
	p, _ := ctx.Value(peerKey{}).(*peer)
	return p
}

// authorize decides the caller's role: on the unix socket uid 0 and the
// admin uid write, members of the admin group read, anyone else is
// refused (403); on TCP a valid bearer token writes, anything else is 401.
func (a *API) authorize(r *http.Request, p *peer) (role, *Error) {
	switch {
	case p == nil:
		return roleNone, newError(http.StatusForbidden, CodeForbidden, "caller not identified")
	case p.unix:
		if p.err != nil {
			return roleNone, newError(http.StatusForbidden, CodeForbidden, "caller not identified: "+p.err.Error())
		}
		if p.uid == 0 || (a.opts.AdminUID > 0 && p.uid == uint32(a.opts.AdminUID)) {
			return roleWrite, nil
		}
		if g := a.opts.AdminGID; g > 0 && (p.gid == uint32(g) || slices.Contains(p.groups, uint32(g))) {
			return roleRead, nil
		}
		return roleNone, newError(http.StatusForbidden, CodeForbidden,
			fmt.Sprintf("uid %d is not root, the admin user or a member of the admin group", p.uid))
	}
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || a.tokens == nil || !a.tokens.valid(strings.TrimSpace(tok)) {
		return roleNone, newError(http.StatusUnauthorized, CodeUnauthorized, "a valid bearer token is required (Authorization: Bearer <token>)")
	}
	a.markClaimed(p) // someone has the token: claiming is over
	return roleWrite, nil
}

// safeMethod is what the read-only role may use.
func safeMethod(m string) bool { return m == http.MethodGet || m == http.MethodHead }

// allowedHosts is the set of Host names the API answers to: localhost and
// the loopback addresses always, the configured names, and the address
// the TCP listener is bound to when it is a specific one. Anything else is
// a DNS-rebinding attempt (a browser sending this API a page's request
// under the attacker's name) or a misconfiguration.
func allowedHosts(opts APIOptions) map[string]bool {
	hosts := map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true}
	for _, h := range opts.Hosts {
		if h = normalizeHost(h); h != "" {
			hosts[h] = true
		}
	}
	if host, _, err := net.SplitHostPort(opts.TCP); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil && !ip.IsUnspecified() {
			hosts[normalizeHost(host)] = true
		}
	}
	return hosts
}

// normalizeHost lowercases a Host value and drops its port, brackets and
// a trailing dot.
func normalizeHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return strings.TrimSuffix(h, ".")
}

// checkHost rejects a Host the API does not answer to (421). Over the unix
// socket, where no browser can reach, the conventional names "unix" and
// the socket path (percent-encoded, as some clients send it) and an empty
// Host are accepted too.
func (a *API) checkHost(r *http.Request, p *peer) *Error {
	h := normalizeHost(r.Host)
	if a.hosts[h] {
		return nil
	}
	if p != nil && !p.unix && isLocalIP(h, p.local) {
		// The address the connection came in on, as an IP literal: the
		// browser was pointed at this very address (a donor opening
		// http://192.168.1.2:8787/ when TCP listens on 0.0.0.0). A
		// DNS-rebinding page always sends its own name instead.
		return nil
	}
	if p != nil && p.unix {
		if h == "" || h == "unix" || r.Host == url.PathEscape(p.local) || r.Host == url.QueryEscape(p.local) {
			return nil
		}
	}
	return newError(http.StatusMisdirectedRequest, CodeMisdirected,
		fmt.Sprintf("host %q is not a name of this API; add it to the API's host names to use it", truncate(r.Host, 80)))
}

// isLocalIP reports whether host (normalised) is an IP literal equal to
// the IP of the connection's local address local ("ip:port").
func isLocalIP(host, local string) bool {
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	la, err := netip.ParseAddrPort(local)
	if err != nil {
		return false
	}
	return !ip.IsUnspecified() && ip.Unmap().WithZone("") == la.Addr().Unmap().WithZone("")
}

// checkOrigin rejects requests a browser sends on behalf of another site:
// an Origin or Referer naming another host (or "null"), or Sec-Fetch-Site
// cross-site. Same-host pages and non-browser clients (which send none of
// these) pass.
func checkOrigin(r *http.Request) *Error {
	for _, h := range []string{"Origin", "Referer"} {
		v := r.Header.Get(h)
		if v == "" {
			continue
		}
		if !sameHost(v, r.Host) {
			return newError(http.StatusForbidden, CodeCrossOrigin,
				fmt.Sprintf("%s %q is not this host: cross-site requests are refused", h, truncate(v, 80)))
		}
	}
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return newError(http.StatusForbidden, CodeCrossOrigin, "cross-site requests are refused")
	}
	return nil
}

// sameHost reports whether the URL raw (an Origin or Referer) names the
// host and port of the request's Host.
func sameHost(raw, host string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	return hostPort(u.Host, u.Scheme) == hostPort(host, "http")
}

func hostPort(h, scheme string) string {
	h = strings.ToLower(h)
	if _, _, err := net.SplitHostPort(h); err == nil {
		return h
	}
	port := "80"
	if scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), port)
}

// tokenStore holds the TCP listener's bearer token: the file
// <state dir>/api-token (mode 0600) and, in memory, only its SHA-256.
type tokenStore struct {
	path string
	mu   sync.Mutex               // serialises ensure and rotate
	hash atomic.Pointer[[32]byte] // nil until loaded
}

// TokenFile is the name of the bearer token file in the state directory.
const TokenFile = "api-token"

func newToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// ensure loads the token, creating it (and the state directory, 0700) on
// first start; a token file readable by others is tightened to 0600.
func (t *tokenStore) ensure() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.hash.Load() != nil {
		return nil
	}
	data, err := os.ReadFile(t.path)
	switch {
	case err == nil:
		tok := string(bytes.TrimSpace(data))
		if len(tok) < 16 {
			return fmt.Errorf("api token %s: shorter than 16 characters; delete it to get a new one", t.path)
		}
		if fi, err := os.Stat(t.path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(t.path, 0o600); err != nil {
				return fmt.Errorf("api token: %w", err)
			}
		}
		h := sha256.Sum256([]byte(tok))
		t.hash.Store(&h)
		return nil
	case errors.Is(err, fs.ErrNotExist):
		_, err := t.replace()
		return err
	default:
		return fmt.Errorf("api token: %w", err)
	}
}

// rotate replaces the token; the old one stops working as soon as it
// returns.
func (t *tokenStore) rotate() (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.replace()
}

func (t *tokenStore) replace() (string, error) {
	if err := os.MkdirAll(filepath.Dir(t.path), 0o700); err != nil {
		return "", fmt.Errorf("api token: state directory: %w", err)
	}
	tok := newToken()
	if err := atomicfile.Write(t.path, []byte(tok+"\n"), 0o600, -1, -1); err != nil {
		return "", fmt.Errorf("api token: %w", err)
	}
	h := sha256.Sum256([]byte(tok))
	t.hash.Store(&h)
	return tok, nil
}

// valid compares in constant time (over the hashes, so not even the
// length leaks).
func (t *tokenStore) valid(tok string) bool {
	want := t.hash.Load()
	if want == nil || tok == "" {
		return false
	}
	got := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// ListenUnix creates the API's unix socket at path with the given mode
// (0 means 0660) and group (gid < 0 keeps the creator's). A stale socket
// left by a dead process is removed first; a socket another process still
// answers on, or a path that is not a socket, is an error. (A socket
// inherited from systemd needs none of this: pass it to Serve directly.)
// Access is decided per connection from the peer's credentials, so the
// instant between creation and chmod grants nothing.
func ListenUnix(ctx context.Context, path string, mode os.FileMode, gid int) (net.Listener, error) {
	if mode == 0 {
		mode = 0o660
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("api socket %s: exists and is not a socket", path)
		}
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var d net.Dialer
		c, err := d.DialContext(dctx, "unix", path)
		cancel()
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("api socket %s: in use by another process", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("api socket %s: remove stale socket: %w", path, err)
		}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("api socket %s: chown: %w", path, err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("api socket %s: chmod: %w", path, err)
	}
	return ln, nil
}
