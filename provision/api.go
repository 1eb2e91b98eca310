package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jnrelay/jnrelay/relayd/config"
)

// Daemon is what the API drives: the running relayd.
type Daemon interface {
	// Status is the daemon's status document (JSON-able).
	Status() any
	// Channels lists the live channels (JSON-able).
	Channels() any
	// KillChannel ends a channel; false if there is none with that id.
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
// reconnections included. relayd's daemon waits a third of it for new
// services to come online (daemon.ApplyTimeout derives from it), which
// leaves the rest for putting the previous configuration back.
const DefaultApplyTimeout = 60 * time.Second

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

func (a *API) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.d.Status())
}

func (a *API) handleChannels(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.d.Channels())
}

// channelID bounds what is passed to the daemon as a channel id.
var channelID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

func (a *API) handleKillChannel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !channelID.MatchString(id) || !a.d.KillChannel(id) {
		writeError(w, newError(http.StatusNotFound, CodeChannelNotFound, fmt.Sprintf("no live channel %q", truncate(id, 80))))
		return
	}
	a.log.Info("channel killed through the API", "channel", id, "by", peerFrom(r.Context()).String())
	w.WriteHeader(http.StatusNoContent)
}

// Log lines: default and maximum of ?n=.
const (
	defaultLogLines = 200
	maxLogLines     = 10000
)

// LogsDocument is the body of GET /v1/logs.
type LogsDocument struct {
	Lines []string `json:"lines"`
}

func (a *API) handleLogs(w http.ResponseWriter, r *http.Request) {
	n := defaultLogLines
	if s := r.URL.Query().Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > maxLogLines {
			e := newError(http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("n must be an integer 1-%d", maxLogLines))
			e.Fields = []FieldError{{Field: "n", Message: fmt.Sprintf("%q is not an integer 1-%d", truncate(s, 20), maxLogLines)}}
			writeError(w, e)
			return
		}
		n = v
	}
	lines := a.d.Logs(n)
	if lines == nil {
		lines = []string{}
	}
	writeJSON(w, http.StatusOK, LogsDocument{Lines: lines})
}

// TokenDocument is the body of POST /v1/token/rotate.
type TokenDocument struct {
	Token string `json:"token"`
}

func (a *API) handleRotateToken(w http.ResponseWriter, r *http.Request) {
	tok, err := a.RotateToken()
	if err != nil {
		var pe *Error
		if errors.As(err, &pe) {
			writeError(w, pe)
			return
		}
		writeError(w, newError(http.StatusInternalServerError, CodeInternal, err.Error()))
		return
	}
	a.log.Info("api token rotated", "by", peerFrom(r.Context()).String())
	writeJSON(w, http.StatusOK, TokenDocument{Token: tok})
}

// RotateToken replaces the bearer token (creating it if needed) and
// returns the new one; the old one is refused from then on.
func (a *API) RotateToken() (string, error) {
	if a.tokens == nil {
		return "", newError(http.StatusConflict, CodeTokenUnavailable, "no state directory is configured, so there is no API token")
	}
	return a.tokens.rotate()
}

func (a *API) handleGetConfig(w http.ResponseWriter, _ *http.Request) {
	cfg, etag, err := a.store.Load()
	if err != nil {
		writeError(w, newError(http.StatusInternalServerError, CodeConfigUnreadable, err.Error()))
		return
	}
	w.Header().Set("ETag", etag)
	writeJSON(w, http.StatusOK, Redact(cfg))
}

func (a *API) handlePutConfig(w http.ResponseWriter, r *http.Request) {
	a.writeConfig(w, r, []string{"application/json"}, func(_ config.Config, _ bool, body []byte) (config.Config, *Error) {
		return documentConfig(body)
	})
}

func (a *API) handlePatchConfig(w http.ResponseWriter, r *http.Request) {
	a.writeConfig(w, r, []string{"application/merge-patch+json", "application/json"}, func(cur config.Config, curOK bool, body []byte) (config.Config, *Error) {
		if !curOK {
			return config.Config{}, newError(http.StatusConflict, CodeConfigUnreadable,
				"the configuration on disk is missing or invalid, so there is nothing to patch: PUT a whole document")
		}
		return patchConfig(cur, body)
	})
}

// writeConfig is PUT and PATCH: check the media type, read the body
// (MaxBody), then, one writer at a time: load the current file, check
// If-Match, build the new document (build), restore redacted secrets,
// validate, apply to the daemon, save. Nothing is saved unless the daemon
// applied it; nothing is applied unless it is valid.
func (a *API) writeConfig(w http.ResponseWriter, r *http.Request, media []string, build func(cur config.Config, curOK bool, body []byte) (config.Config, *Error)) {
	if e := checkMediaType(r, media); e != nil {
		writeError(w, e)
		return
	}
	body, e := readBody(w, r)
	if e != nil {
		writeError(w, e)
		return
	}

	select {
	case a.writeSem <- struct{}{}:
	case <-r.Context().Done():
		writeError(w, newError(http.StatusServiceUnavailable, CodeUnavailable, "gave up waiting for another configuration change"))
		return
	}
	defer func() { <-a.writeSem }()

	cur, etag, err := a.store.Load()
	curOK := err == nil
	if err != nil && !errors.Is(err, ErrInvalidFile) && !errors.Is(err, fs.ErrNotExist) {
		writeError(w, newError(http.StatusInternalServerError, CodeConfigUnreadable, err.Error()))
		return
	}
	if im := r.Header.Get("If-Match"); im != "" && !etagMatches(im, etag) {
		writeError(w, newError(http.StatusPreconditionFailed, CodePrecondition,
			"the configuration changed since it was read (If-Match does not match the current ETag): get it again and redo the change"))
		return
	}

	next, e := build(cur, curOK, body)
	if e != nil {
		writeError(w, e)
		return
	}
	next.Path = a.store.Path()
	if p := peerFrom(r.Context()); p == nil || !p.unix {
		if fields := networkFileChanges(cur, curOK, next); len(fields) > 0 {
			e := newError(http.StatusForbidden, CodeFilesLocalOnly,
				"files (secret_file, password_file, ca_file) can only be named or moved to another server through the unix socket (relayd config set, as root or the admin user); over the network send the secret itself")
			e.Fields = fields
			a.log.Warn("configuration change naming files refused on the network listener", "by", peerFrom(r.Context()).String(), "fields", len(fields))
			writeError(w, e)
			return
		}
	}
	next = Unredact(next, cur)
	fields := unresolvedPlaceholders(next, cur)
	fields = append(fields, validationFields(next)...)
	if len(fields) > 0 {
		writeError(w, invalidConfig(fields))
		return
	}

	if curOK && sameConfig(cur, next) {
		w.Header().Set("ETag", etag)
		writeJSON(w, http.StatusOK, Redact(cur))
		return
	}

	// The change goes through even if the caller disconnects now:
	// applied and saved, or neither.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), a.opts.ApplyTimeout)
	defer cancel()
	who := peerFrom(r.Context()).String()
	if err := a.d.Apply(ctx, next); err != nil {
		a.log.Warn("configuration change refused by the daemon", "by", who, "err", err)
		writeError(w, applyError(err))
		return
	}
	newTag, err := a.store.Save(next)
	if err != nil {
		msg := "applied but could not be saved: " + err.Error()
		if curOK {
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(r.Context()), a.opts.ApplyTimeout)
			rerr := a.d.Apply(rctx, cur)
			rcancel()
			if rerr != nil {
				msg += "; putting the previous configuration back failed too: " + rerr.Error()
			} else {
				msg += "; the previous configuration is back in effect"
			}
		}
		a.log.Error("configuration change not persisted", "by", who, "err", msg)
		writeError(w, newError(http.StatusInternalServerError, CodePersistFailed, msg))
		return
	}
	a.log.Info("configuration changed through the API", "by", who, "method", r.Method, "etag", newTag)
	w.Header().Set("ETag", newTag)
	writeJSON(w, http.StatusOK, Redact(next))
}

// checkMediaType requires a JSON Content-Type on writes: besides telling
// the format, it keeps browsers from sending them as "simple" cross-site
// requests (forms can only send form and text types).
func checkMediaType(r *http.Request, allowed []string) *Error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err == nil && slices.Contains(allowed, mt) {
		return nil
	}
	return newError(http.StatusUnsupportedMediaType, CodeUnsupportedMedia,
		fmt.Sprintf("Content-Type must be %s", strings.Join(allowed, " or ")))
}

// readBody reads at most MaxBody bytes; more is 413.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *Error) {
	tooLarge := newError(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, fmt.Sprintf("the body is larger than %d bytes", MaxBody))
	if r.ContentLength > MaxBody {
		return nil, tooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge
		}
		return nil, newError(http.StatusBadRequest, CodeBadRequest, "read body: "+err.Error())
	}
	return body, nil
}

// etagMatches implements If-Match's strong comparison: "*" matches any
// existing file, otherwise one of the listed tags must equal the current
// one. Weak tags never match.
func etagMatches(header, current string) bool {
	if current == "" {
		return false
	}
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || t == current {
			return true
		}
	}
	return false
}
