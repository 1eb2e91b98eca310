package provision

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
)

// The read-only endpoints and the token rotation; the configuration's
// endpoints are in configapi.go.

func (a *API) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.d.Status())
}

func (a *API) handleChannels(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.d.Channels())
}

func (a *API) handleUsage(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.d.Usage())
}

// channelID bounds what is passed to the daemon as a channel id.
var channelID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

func (a *API) handleKillChannel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !channelID.MatchString(id) || !a.d.KillChannel(id) {
		writeError(w, newError(http.StatusNotFound, CodeChannelNotFound, fmt.Sprintf("no live channel or TURN allocation %q", truncate(id, 80))))
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
