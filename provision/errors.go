package provision

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/jnrelay/jnrelay/config"
)

// Error codes carried in the "code" member of every error document.
const (
	CodeBadRequest       = "bad_request"            // 400: a malformed query parameter
	CodeInvalidJSON      = "invalid_json"           // 400: the body is not one JSON document
	CodeInvalidConfig    = "invalid_config"         // 400: unknown keys, wrong types, out-of-range values (see fields)
	CodeUnauthorized     = "unauthorized"           // 401: TCP caller without a valid bearer token
	CodeForbidden        = "forbidden"              // 403: caller identified but not allowed
	CodeFilesLocalOnly   = "files_local_only"       // 403: a TCP write names a file or moves one to another server (see fields)
	CodeCrossOrigin      = "cross_origin"           // 403: foreign Origin, Referer or Sec-Fetch-Site
	CodeNotFound         = "not_found"              // 404: no such endpoint
	CodeChannelNotFound  = "channel_not_found"      // 404: no live channel or TURN allocation with that id
	CodeMethodNotAllowed = "method_not_allowed"     // 405: see the Allow header
	CodeApplyFailed      = "apply_failed"           // 409: the daemon could not apply the configuration and kept the previous one
	CodeTokenUnavailable = "token_unavailable"      // 409: no state directory, so no bearer token
	CodeAlreadyClaimed   = "already_claimed"        // 409: POST /v1/claim on a relay someone claimed
	CodePrecondition     = "precondition_failed"    // 412: If-Match does not name the current ETag
	CodeBodyTooLarge     = "body_too_large"         // 413: more than 64 KiB
	CodeUnsupportedMedia = "unsupported_media_type" // 415: PUT/PATCH without a JSON Content-Type
	CodeMisdirected      = "misdirected_request"    // 421: Host is not a name of this API (DNS rebinding)
	CodeInternal         = "internal_error"         // 500
	CodeConfigUnreadable = "config_unreadable"      // 500 (GET) / 409 (PATCH): the file on disk is missing or invalid
	CodePersistFailed    = "persist_failed"         // 500: applied but not saved; the daemon was put back
	CodeUnavailable      = "unavailable"            // 503: the caller went away while waiting for another write
	CodeHTTP             = "http_error"             // client side: an error response that was not an API error document
)

// FieldError is one problem with one key of the configuration document.
// Field uses the document's own notation: "ports.min", "xmpp[0].secret".
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error is the API's error document, {"code", "message", ["fields"]}, with
// the HTTP status it travels with. The server writes it; the Client returns
// it; Daemon.Apply may return one to choose the status, code and fields of
// its refusal.
type Error struct {
	Status  int          `json:"-"`
	Code    string       `json:"code"`
	Message string       `json:"message"`
	Fields  []FieldError `json:"fields,omitempty"`
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Message)
	if e.Message == "" {
		b.WriteString(http.StatusText(e.Status))
	}
	if e.Code != "" {
		b.WriteString(" (")
		b.WriteString(e.Code)
		b.WriteString(")")
	}
	return b.String()
}

func newError(status int, code, message string) *Error {
	return &Error{Status: status, Code: code, Message: message}
}

// writeJSON writes v as an indented JSON document. It marshals first, so a
// value that cannot be encoded turns into a 500 error document rather than
// a truncated body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		_ = json.NewEncoder(&buf).Encode(newError(status, CodeInternal, "encode response: "+err.Error()))
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func writeError(w http.ResponseWriter, e *Error) {
	if e.Status < 400 || e.Status > 599 {
		e.Status = http.StatusInternalServerError
	}
	writeJSON(w, e.Status, e)
}

// configError is the answer to a configuration the config package
// refused: 400 invalid_config listing its fields when they are known
// (*config.Invalid), else 400 invalid_json with the decoder's message.
func configError(err error) *Error {
	var inv *config.Invalid
	if errors.As(err, &inv) {
		return invalidConfig(apiFields(inv))
	}
	return newError(http.StatusBadRequest, CodeInvalidJSON, err.Error())
}

// apiFields is the API's form of the config package's field errors.
func apiFields(inv *config.Invalid) []FieldError {
	out := make([]FieldError, len(inv.Fields))
	for i, f := range inv.Fields {
		out[i] = FieldError{Field: f.Field, Message: f.Message}
	}
	return out
}

// validationFields are the problems config.Validate finds in cfg.
func validationFields(cfg config.Config) []FieldError {
	err := cfg.Validate()
	if err == nil {
		return nil
	}
	var inv *config.Invalid
	if errors.As(err, &inv) {
		return apiFields(inv)
	}
	return []FieldError{{Message: err.Error()}}
}

// invalidConfig builds the 400 answer listing every field problem.
func invalidConfig(fields []FieldError) *Error {
	parts := make([]string, 0, len(fields))
	for _, f := range fields {
		if f.Field == "" {
			parts = append(parts, f.Message)
			continue
		}
		parts = append(parts, f.Field+": "+f.Message)
	}
	return &Error{
		Status:  http.StatusBadRequest,
		Code:    CodeInvalidConfig,
		Message: "invalid configuration: " + strings.Join(parts, "; "),
		Fields:  fields,
	}
}

// applyError turns what Daemon.Apply returned into the answer: the
// daemon's own *Error when it sent one (status kept if it is 4xx/5xx),
// else 409 apply_failed with its message.
func applyError(err error) *Error {
	var pe *Error
	if errors.As(err, &pe) {
		out := *pe
		if out.Status < 400 || out.Status > 599 {
			out.Status = http.StatusConflict
		}
		if out.Code == "" {
			out.Code = CodeApplyFailed
		}
		return &out
	}
	return newError(http.StatusConflict, CodeApplyFailed,
		"the relay could not apply the configuration and kept the previous one: "+err.Error())
}
