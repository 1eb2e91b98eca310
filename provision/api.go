package provision

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jnrelay/jnrelay/config"
)

// Daemon is what the API drives: the running relayd.
type Daemon interface {
	// Status is the daemon's status document (JSON-able).
	Status() any
	// Channels lists the live channels and TURN allocations (JSON-able).
	Channels() any
	// Usage is the usage history: per day, per month, and the live
	// calls of the last hour (JSON-able).
	Usage() any
	// KillChannel ends a channel or a TURN allocation; false if there is
	// none with that id.
	KillChannel(id string) bool
	// Apply switches the running daemon to cfg (already validated). It
	// returns nil only once cfg is in effect; otherwise the daemon is
	// back on its previous configuration and the error says why (an
	// *Error chooses the status, code and fields of the answer). It must
	// return by ctx's deadline. The API never calls it concurrently.
	Apply(ctx context.Context, cfg config.Config) error
	// Logs returns up to n recent log lines, newest last.
	Logs(n int) []string
}

// APIOptions configure an API. The zero value serves the unix socket to
// root only, with no TCP listener.
type APIOptions struct {
	// AdminUID may also write (besides uid 0); <= 0 means nobody else.
	AdminUID int
	// AdminGID: members (primary or supplementary group) may read;
	// <= 0 means no read-only group.
	AdminGID int
	// StateDir holds the bearer token file (TokenFile). Required for TCP
	// and for token rotation.
	StateDir string
	// TCP is the optional TCP listen address ("127.0.0.1:8787",
	// "192.168.1.2:8787"); empty (the default) means no TCP listener.
	// Every TCP request needs the bearer token.
	TCP string
	// Hosts are extra Host names the API answers to (besides localhost,
	// 127.0.0.1, ::1 and the TCP listen address), e.g. "relay.lan" or a
	// LAN address when TCP listens on all interfaces.
	Hosts []string
	// ApplyTimeout bounds Daemon.Apply; 0 means DefaultApplyTimeout.
	ApplyTimeout time.Duration
	// Logger receives the audit log (who changed what) and server errors;
	// nil discards.
	Logger *slog.Logger
}

// DefaultApplyTimeout bounds a live apply (Daemon.Apply), XMPP
// reconnections included: config.ApplyTimeout, of which the daemon waits
// a third for new services to come online (config.OnlineTimeout).
const DefaultApplyTimeout = config.ApplyTimeout

// MaxBody is the largest request body accepted.
const MaxBody = 64 << 10

// API is the provisioning API: an http.Handler serving /v1 over the unix
// socket and the optional TCP listener.
type API struct {
	d      Daemon
	store  *Store
	opts   APIOptions
	log    *slog.Logger
	mux    *http.ServeMux
	hosts  map[string]bool
	tokens *tokenStore // nil without StateDir
	// refusedRemote counts TCP connections closed for coming from outside
	// the local networks.
	refusedRemote atomic.Uint64
	claimedSeen   atomic.Bool // the claim marker is known to exist
	// writeSem serialises configuration writers (load, compare ETag,
	// apply, save); a channel so a waiting caller can give up.
	writeSem chan struct{}
}

// NewAPI builds the API over the daemon and the configuration store. It
// does no I/O; the bearer token is loaded or created by ListenTCP (or
// RotateToken).
func NewAPI(d Daemon, store *Store, opts APIOptions) *API {
	if opts.ApplyTimeout <= 0 {
		opts.ApplyTimeout = DefaultApplyTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &API{
		d:        d,
		store:    store,
		opts:     opts,
		log:      log,
		hosts:    allowedHosts(opts),
		writeSem: make(chan struct{}, 1),
	}
	if opts.StateDir != "" {
		a.tokens = &tokenStore{path: filepath.Join(opts.StateDir, TokenFile)}
	}
	a.mux = a.routes()
	return a
}

type route struct {
	method, pattern string
	h               http.HandlerFunc
}

// routes registers every endpoint by method and path, a per-path fallback
// answering 405 with Allow, and a catch-all 404, all with JSON bodies.
func (a *API) routes() *http.ServeMux {
	mux := http.NewServeMux()
	table := []route{
		{http.MethodGet, "/v1/status", a.handleStatus},
		{http.MethodGet, "/v1/config", a.handleGetConfig},
		{http.MethodPut, "/v1/config", a.handlePutConfig},
		{http.MethodPatch, "/v1/config", a.handlePatchConfig},
		{http.MethodGet, "/v1/channels", a.handleChannels},
		{http.MethodGet, "/v1/usage", a.handleUsage},
		{http.MethodDelete, "/v1/channels/{id}", a.handleKillChannel},
		{http.MethodGet, "/v1/logs", a.handleLogs},
		{http.MethodPost, "/v1/token/rotate", a.handleRotateToken},
	}
	allow := map[string][]string{}
	var order []string
	for _, r := range table {
		mux.HandleFunc(r.method+" "+r.pattern, r.h)
		if _, seen := allow[r.pattern]; !seen {
			order = append(order, r.pattern)
		}
		allow[r.pattern] = append(allow[r.pattern], r.method)
		if r.method == http.MethodGet {
			allow[r.pattern] = append(allow[r.pattern], http.MethodHead)
		}
	}
	for _, p := range order {
		methods := strings.Join(allow[p], ", ")
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", methods)
			writeError(w, newError(http.StatusMethodNotAllowed, CodeMethodNotAllowed,
				fmt.Sprintf("%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, methods)))
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, newError(http.StatusNotFound, CodeNotFound, fmt.Sprintf("no endpoint %s", truncate(r.URL.Path, 80))))
	})
	return mux
}

// ServeHTTP applies the browser-safety headers and checks (Host, Origin),
// identifies and authorises the caller, then routes.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")

	p := peerFrom(r.Context())
	if e := a.checkHost(r, p); e != nil {
		writeError(w, e)
		return
	}
	if isWebPath(r.URL.Path) {
		// The page's files: no data, no effect, so no token and no
		// Origin check (a link from another page, such as the router's,
		// may open it); its API calls are checked like any other.
		a.serveWeb(w, r)
		return
	}
	if e := checkOrigin(r); e != nil {
		writeError(w, e)
		return
	}
	if r.URL.Path == "/v1/claim" && p != nil && !p.unix {
		// No token yet: see claim.go. Host and Origin were checked, so a
		// foreign page cannot claim the relay through a donor's browser.
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			a.handleClaimStatus(w, r)
		case http.MethodPost:
			a.handleClaim(w, r)
		default:
			w.Header().Set("Allow", "GET, HEAD, POST")
			writeError(w, newError(http.StatusMethodNotAllowed, CodeMethodNotAllowed, r.Method+" is not allowed on /v1/claim (allowed: GET, HEAD, POST)"))
		}
		return
	}
	ro, e := a.authorize(r, p)
	if e != nil {
		if e.Status == http.StatusUnauthorized {
			h.Set("WWW-Authenticate", `Bearer realm="relayd"`)
		}
		writeError(w, e)
		return
	}
	if ro < roleWrite && !safeMethod(r.Method) {
		writeError(w, newError(http.StatusForbidden, CodeForbidden, "read-only access: the admin group may only read"))
		return
	}
	a.mux.ServeHTTP(w, r)
}
