package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/jnrelay/jnrelay/config"
)

// The configuration's endpoints: GET, PUT and PATCH /v1/config.

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
				"files (secret_file, password_file, ca_file, cert_file, key_file) can only be named or moved to another server through the unix socket (relayd config set, as root or the admin user); over the network send the secret itself")
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
