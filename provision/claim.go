package provision

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/jnrelay/jnrelay/internal/atomicfile"
)

// ClaimedFile marks, in the state directory, that someone has claimed the
// relay: took its first API token through the web page.
const ClaimedFile = "api-claimed"

// ClaimDocument is the body of GET and POST /v1/claim.
type ClaimDocument struct {
	Claimed bool `json:"claimed"`
	// Token is the new bearer token, in the answer to the one POST that
	// claims the relay (never again: later sign-ins need it).
	Token string `json:"token,omitempty"`
}

// A freshly flashed relay has no console: its donor claims it from the web
// page instead of reading the token file. While it is unclaimed, POST
// /v1/claim over TCP (so from the local network, see localOnly) needs no
// token: it marks the relay claimed (once: the marker is created
// exclusively) and answers with a new token. From then on the token is
// needed; `relayd token show` (root) prints it, and deleting the marker
// (root) opens claiming again.

func (a *API) claimedPath() string { return filepath.Join(a.opts.StateDir, ClaimedFile) }

func (a *API) claimed() bool {
	_, err := os.Stat(a.claimedPath())
	return err == nil
}

func (a *API) handleClaimStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, ClaimDocument{Claimed: a.tokens == nil || a.claimed()})
}

func (a *API) handleClaim(w http.ResponseWriter, r *http.Request) {
	if a.tokens == nil {
		writeError(w, newError(http.StatusConflict, CodeTokenUnavailable, "no state directory is configured, so there is no API token"))
		return
	}
	f, err := os.OpenFile(a.claimedPath(), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		writeError(w, newError(http.StatusConflict, CodeAlreadyClaimed,
			"this relay is already claimed: sign in with its token (as root on the relay: relayd token show)"))
		return
	}
	if err != nil {
		writeError(w, newError(http.StatusInternalServerError, CodeInternal, fmt.Sprintf("claim: %v", err)))
		return
	}
	by := peerFrom(r.Context()).String()
	_, werr := fmt.Fprintf(f, "claimed by %s\n", by)
	if err := errors.Join(werr, f.Sync(), f.Close(), atomicfile.SyncDir(a.opts.StateDir)); err != nil {
		_ = os.Remove(a.claimedPath())
		writeError(w, newError(http.StatusInternalServerError, CodeInternal, fmt.Sprintf("claim: %v", err)))
		return
	}
	tok, err := a.tokens.rotate()
	if err != nil {
		_ = os.Remove(a.claimedPath())
		writeError(w, newError(http.StatusInternalServerError, CodeInternal, err.Error()))
		return
	}
	a.log.Info("relay claimed through the web page; a new API token was issued", "by", by)
	writeJSON(w, http.StatusOK, ClaimDocument{Claimed: true, Token: tok})
}

// localNetwork reports whether a peer address is on a network the API's
// TCP listener serves: loopback, private (RFC 1918, fc00::/7) and
// link-local. A relay on a public address must not offer its API, let
// alone an unclaimed one, to the Internet.
func localNetwork(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast()
}

// localOnly is a listener that closes connections from outside the local
// networks at once (counted, logged at debug level: a scan must not flood
// the log).
type localOnly struct {
	net.Listener
	log     *slog.Logger
	refused *atomic.Uint64
}

func (l localOnly) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil && localNetwork(ap.Addr()) {
			return c, nil
		}
		l.refused.Add(1)
		l.log.Debug("api connection from outside the local network closed", "remote", c.RemoteAddr().String())
		_ = c.Close()
	}
}

// markClaimed records that the relay is claimed when its token is used
// (read from the file by root, say) before anyone claimed it through the
// page, so nobody else on the network can claim it afterwards and
// replace that token.
func (a *API) markClaimed(p *peer) {
	if a.claimedSeen.Load() || a.opts.StateDir == "" {
		return
	}
	if a.claimed() {
		a.claimedSeen.Store(true)
		return
	}
	err := os.WriteFile(a.claimedPath(), []byte("claimed by the token holder "+p.String()+"\n"), 0o600)
	if err != nil {
		a.log.Warn("could not mark the relay claimed", "err", err)
		return
	}
	a.claimedSeen.Store(true)
}
