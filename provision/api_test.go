package provision

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jnrelay/jnrelay/config"
)

func decodeErr(t *testing.T, r result) Error {
	t.Helper()
	var e Error
	if err := json.Unmarshal(r.body, &e); err != nil || e.Code == "" || e.Message == "" {
		t.Fatalf("not a JSON error document: %s (%v)", r, err)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error Content-Type %q", ct)
	}
	return e
}

func hasField(e Error, field string) bool {
	for _, f := range e.Fields {
		if f.Field == field {
			return true
		}
	}
	return false
}

func TestSecurityHeadersEverywhere(t *testing.T) {
	e := startAPI(t, "", APIOptions{}, 0, -1)
	for _, r := range []result{
		e.do(t, "GET", "/v1/status", "", nil),
		e.do(t, "GET", "/nope", "", nil),
		e.do(t, "GET", "/v1/status", "", map[string]string{"Host": "evil.example"}),
	} {
		for k, want := range map[string]string{
			"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
			"Cache-Control":           "no-store",
		} {
			if got := r.header.Get(k); got != want {
				t.Errorf("%d answer: %s = %q, want %q", r.status, k, got, want)
			}
		}
	}
}

func TestStatusChannelsLogs(t *testing.T) {
	e := startAPI(t, "", APIOptions{}, 0, -1)
	c := NewClient(e.sock)
	defer c.Close()
	ctx := context.Background()

	st, err := c.Status(ctx)
	if err != nil || !strings.Contains(string(st), `"version": "test"`) {
		t.Fatalf("status %s %v", st, err)
	}
	ch, err := c.Channels(ctx)
	if err != nil || !strings.Contains(string(ch), "aa01") {
		t.Fatalf("channels %s %v", ch, err)
	}
	if err := c.KillChannel(ctx, "aa01"); err != nil {
		t.Fatal(err)
	}
	var ae *Error
	if err := c.KillChannel(ctx, "aa01"); !errors.As(err, &ae) || ae.Status != 404 || ae.Code != CodeChannelNotFound {
		t.Fatalf("kill unknown channel: %v", err)
	}
	if err := c.KillChannel(ctx, "../../x y"); !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("kill odd id: %v", err)
	}
	// A TURN allocation is listed and ended through the same endpoints.
	if ch, err := c.Channels(ctx); err != nil || !strings.Contains(string(ch), `"turn-7"`) {
		t.Fatalf("channels %s %v, want the TURN allocation turn-7", ch, err)
	}
	if err := c.KillChannel(ctx, "turn-7"); err != nil {
		t.Fatal(err)
	}
	if err := c.KillChannel(ctx, "turn-7"); !errors.As(err, &ae) || ae.Status != 404 || !strings.Contains(ae.Message, "TURN allocation") {
		t.Fatalf("kill of an ended TURN allocation: %v", err)
	}
	if u, err := c.Usage(ctx); err != nil || !strings.Contains(string(u), `"period": "2026-12-06"`) {
		t.Fatalf("usage %s %v, want the daemon's history", u, err)
	}
	lines, err := c.Logs(ctx, 2)
	if err != nil || strings.Join(lines, ",") != "two,three" {
		t.Fatalf("logs %v %v", lines, err)
	}
	r := e.do(t, "GET", "/v1/logs?n=abc", "", nil)
	if r.status != 400 || !hasField(decodeErr(t, r), "n") {
		t.Fatalf("bad n: %s", r)
	}
	if r := e.do(t, "DELETE", "/v1/channels/bb02", "", nil); r.status != 204 {
		t.Fatalf("DELETE: %s", r)
	}
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	e := startAPI(t, "", APIOptions{}, 0, -1)
	// "/" is the web page (web_test.go).
	for _, p := range []string{"/v1", "/v1/", "/v2/status", "/v1/config/x", "/v1/channels/", "/index.html"} {
		r := e.do(t, "GET", p, "", nil)
		if r.status != 404 || decodeErr(t, r).Code != CodeNotFound {
			t.Errorf("GET %s: %s", p, r)
		}
	}
	for _, c := range []struct{ method, path, allow string }{
		{"POST", "/v1/status", "GET, HEAD"},
		{"DELETE", "/v1/config", "GET, HEAD, PUT, PATCH"},
		{"GET", "/v1/channels/aa01", "DELETE"},
		{"GET", "/v1/token/rotate", "POST"},
		{"PUT", "/v1/logs", "GET, HEAD"},
	} {
		r := e.do(t, c.method, c.path, "", nil)
		if r.status != 405 || decodeErr(t, r).Code != CodeMethodNotAllowed || r.header.Get("Allow") != c.allow {
			t.Errorf("%s %s: %s Allow=%q", c.method, c.path, r, r.header.Get("Allow"))
		}
	}
}

func TestGetConfigRedacted(t *testing.T) {
	e := startAPI(t, "", APIOptions{}, 0, -1)
	r := e.do(t, "GET", "/v1/config", "", nil)
	if r.status != 200 || r.header.Get("ETag") != ETag([]byte(baseDoc)) {
		t.Fatalf("GET: %s etag %s", r, r.header.Get("ETag"))
	}
	for _, secret := range []string{"component-secret", "account-password", "turn-secret"} {
		if strings.Contains(string(r.body), secret) {
			t.Fatalf("secret %q in GET answer:\n%s", secret, r.body)
		}
	}
	var cfg config.Config
	if err := json.Unmarshal(r.body, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.XMPP[0].Secret != Placeholder || cfg.XMPP[1].Password != Placeholder || cfg.TURN.Secret != Placeholder {
		t.Fatalf("placeholders missing: %+v %+v", cfg.XMPP, cfg.TURN)
	}
}

// TestRedactionRoundTrip: GET, PUT back unchanged keeps the secrets and
// changes nothing; GET, edit, PUT changes only the edit.
func TestRedactionRoundTrip(t *testing.T) {
	e := startAPI(t, "", APIOptions{}, 0, -1)
	c := NewClient(e.sock)
	defer c.Close()
	ctx := context.Background()
	doc, etag, err := c.GetConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := e.fileBytes(t)
	got, err := c.PutConfig(ctx, doc, etag)
	if err != nil || got != etag {
		t.Fatalf("PUT unchanged: etag %s (was %s) %v", got, etag, err)
	}
	e.unchanged(t, before, 0)

	edited := strings.Replace(string(doc), `"max_kbps": 0`, `"max_kbps": 2000`, 1)
	newTag, err := c.PutConfig(ctx, []byte(edited), etag)
	if err != nil || newTag == etag || newTag != ETag(e.fileBytes(t)) {
		t.Fatalf("PUT edited: %s %v", newTag, err)
	}
	saved, _, err := e.store.Load()
	if err != nil {
		t.Fatal(err)
	}
	if saved.Channel.MaxKbps != 2000 || saved.XMPP[0].Secret != "component-secret" || saved.XMPP[1].Password != "account-password" || saved.TURN.Secret != "turn-secret" {
		t.Fatalf("saved %+v %+v %+v", saved.Channel, saved.XMPP, saved.TURN)
	}
	if n := e.d.applyCount(); n != 1 || e.d.applied[0].XMPP[0].Secret != "component-secret" {
		t.Fatalf("daemon got %d applies, secret %q", n, e.d.applied[0].XMPP[0].Secret)
	}
	if lg, _, err := e.store.LoadLastGood(); err != nil || lg.Channel.MaxKbps != 0 {
		t.Fatalf("last-good: %+v %v", lg.Channel, err)
	}
}

func TestPutPlaceholderForUnknownServiceIsRefused(t *testing.T) {
	e := startAPI(t, "", APIOptions{}, 0, -1)
	before := e.fileBytes(t)
	doc := `{"xmpp": [{"name": "renamed", "type": "component", "server": "h:1", "domain": "relay.example.org", "secret": "********"}]}`
	r := e.do(t, "PUT", "/v1/config", doc, jsonCT)
	if r.status != 400 || !hasField(decodeErr(t, r), "xmpp[0].secret") {
		t.Fatalf("%s", r)
	}
	e.unchanged(t, before, 0)
}

func TestPutValidationNamesTheField(t *testing.T) {
	e := startAPI(t, "", APIOptions{}, 0, -1)
	before := e.fileBytes(t)
	cases := []struct {
		name, doc, code string
		fields          []string
	}{
		{"out of range", `{"ports": {"min": 80, "max": 40999}, "xmpp": [{"type": "component", "server": "h:1", "domain": "d.example", "secret": "s"}]}`, CodeInvalidConfig, []string{"ports.min"}},
		{"several", `{"channel": {"expire_seconds": 0}, "log": {"level": "loud"}, "xmpp": [{"type": "bosh"}]}`, CodeInvalidConfig, []string{"channel.expire_seconds", "log.level", "xmpp[0].type"}},
		{"unknown key", `{"expire": 60, "xmpp": [{"type": "component", "server": "h:1", "domain": "d.example", "secret": "s", "secrett": "x"}]}`, CodeInvalidConfig, []string{"expire", "xmpp[0].secrett"}},
		{"wrong type", `{"channel": {"expire_seconds": "60"}, "ports": {"min": 40000.5}, "stun": {"enabled": 1}, "xmpp": {}}`, CodeInvalidConfig, []string{"channel.expire_seconds", "ports.min", "stun.enabled", "xmpp"}},
		{"integer overflow", `{"ports": {"min": 99999999999999999999}}`, CodeInvalidConfig, []string{"ports.min"}},
		{"case matters", `{"Ports": {"min": 40000}}`, CodeInvalidConfig, []string{"Ports"}},
		{"bad json", `{"ports": {"min": 40000,}}`, CodeInvalidJSON, nil},
		{"trailing data", `{} {}`, CodeInvalidJSON, nil},
		{"not an object", `[1, 2]`, CodeInvalidJSON, nil},
		{"empty", ``, CodeInvalidJSON, nil},
	}
	for _, c := range cases {
		r := e.do(t, "PUT", "/v1/config", c.doc, jsonCT)
		if r.status != 400 {
			t.Errorf("%s: %s", c.name, r)
			continue
		}
		er := decodeErr(t, r)
		if er.Code != c.code {
			t.Errorf("%s: code %s, want %s: %s", c.name, er.Code, c.code, r)
		}
		for _, f := range c.fields {
			if !hasField(er, f) {
				t.Errorf("%s: no field %q in %s", c.name, f, r)
			}
			if !strings.Contains(er.Message, f) {
				t.Errorf("%s: message does not name %q: %s", c.name, f, er.Message)
			}
		}
	}
	e.unchanged(t, before, 0)
}

func TestClientErrorCarriesFields(t *testing.T) {
	e := startAPI(t, "", APIOptions{}, 0, -1)
	c := NewClient(e.sock)
	defer c.Close()
	_, err := c.PatchConfig(context.Background(), []byte(`{"channel": {"expire_seconds": 0}}`), "")
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 400 || ae.Code != CodeInvalidConfig || len(ae.Fields) != 1 || ae.Fields[0].Field != "channel.expire_seconds" {
		t.Fatalf("%#v", err)
	}
	if !strings.Contains(err.Error(), "channel.expire_seconds: 0 is outside 1-3600") {
		t.Fatalf("message: %v", err)
	}
}

func TestPreconditionFailed(t *testing.T) {
	e := startAPI(t, "", APIOptions{}, 0, -1)
	before := e.fileBytes(t)
	doc := strings.Replace(baseDoc, "203.0.113.10", "203.0.113.11", 1)
	for _, im := range []string{`"stale"`, `W/` + ETag(before), ETag([]byte("other"))} {
		r := e.do(t, "PUT", "/v1/config", doc, withHeaders(jsonCT, "If-Match", im))
		if r.status != 412 || decodeErr(t, r).Code != CodePrecondition {
			t.Fatalf("If-Match %s: %s", im, r)
		}
		r = e.do(t, "PATCH", "/v1/config", `{"public_address": "203.0.113.12"}`, withHeaders(jsonCT, "If-Match", im))
		if r.status != 412 {
			t.Fatalf("PATCH If-Match %s: %s", im, r)
		}
	}
	e.unchanged(t, before, 0)
	// A list holding the current tag, and "*", match.
	r := e.do(t, "PUT", "/v1/config", doc, withHeaders(jsonCT, "If-Match", `"x", `+ETag(before)))
	if r.status != 200 {
		t.Fatalf("If-Match list: %s", r)
	}
	r = e.do(t, "PATCH", "/v1/config", `{"public_address": "203.0.113.12"}`, withHeaders(jsonCT, "If-Match", "*"))
	if r.status != 200 {
		t.Fatalf("If-Match *: %s", r)
	}
}

func TestBodyTooLargeAndMediaType(t *testing.T) {
	e := startAPI(t, "", APIOptions{}, 0, -1)
	before := e.fileBytes(t)
	big := `{"public_address": "` + strings.Repeat("x", MaxBody) + `"}`
	r := e.do(t, "PUT", "/v1/config", big, jsonCT)
	if r.status != 413 || decodeErr(t, r).Code != CodeBodyTooLarge {
		t.Fatalf("big body: %d", r.status)
	}
	// Without Content-Length (chunked), the limit still holds.
	pr, pw := newChunkedBody(big)
	req, _ := http.NewRequest("PATCH", "http://localhost/v1/config", pr)
	req.Header.Set("Content-Type", "application/merge-patch+json")
	go pw()
	resp, err := e.unix.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("chunked big body: %d", resp.StatusCode)
	}
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded"} {
		r := e.do(t, "PUT", "/v1/config", baseDoc, map[string]string{"Content-Type": ct})
		if r.status != 415 || decodeErr(t, r).Code != CodeUnsupportedMedia {
			t.Fatalf("Content-Type %q: %s", ct, r)
		}
	}
	e.unchanged(t, before, 0)
}

// newChunkedBody returns a reader of s of unknown length, and the function
// that feeds it.
func newChunkedBody(s string) (*os.File, func()) {
	r, w, err := os.Pipe()
	if err != nil {
		panic(err)
	}
	return r, func() {
		_, _ = w.WriteString(s)
		w.Close()
	}
}

func TestApplyFailureSavesNothing(t *testing.T) {
	e := startAPI(t, "", APIOptions{}, 0, -1)
	before := e.fileBytes(t)
	patch := `{"ports": {"min": 41000, "max": 41999}}`

	e.d.setFail(errors.New("cannot bind 41000-41999: address in use"))
	r := e.do(t, "PATCH", "/v1/config", patch, jsonCT)
	if r.status != 409 || decodeErr(t, r).Code != CodeApplyFailed || !strings.Contains(string(r.body), "address in use") {
		t.Fatalf("apply failure: %s", r)
	}
	e.unchanged(t, before, 0)

	e.d.setFail(&Error{Status: 422, Code: "xmpp_login_failed", Message: "donor: not authorized", Fields: []FieldError{{Field: "xmpp[1].password", Message: "not authorized"}}})
	r = e.do(t, "PATCH", "/v1/config", patch, jsonCT)
	er := decodeErr(t, r)
	if r.status != 422 || er.Code != "xmpp_login_failed" || !hasField(er, "xmpp[1].password") {
		t.Fatalf("daemon error: %s", r)
	}
	e.unchanged(t, before, 0)

	e.d.setFail(nil)
	if r := e.do(t, "PATCH", "/v1/config", patch, jsonCT); r.status != 200 {
		t.Fatalf("after recovery: %s", r)
	}
}

func TestPatchMergeSemantics(t *testing.T) {
	e := startAPI(t, "", APIOptions{}, 0, -1)
	patch := func(p string) config.Config {
		t.Helper()
		r := e.do(t, "PATCH", "/v1/config", p, map[string]string{"Content-Type": "application/merge-patch+json"})
		if r.status != 200 {
			t.Fatalf("PATCH %s: %s", p, r)
		}
		if r.header.Get("ETag") != ETag(e.fileBytes(t)) {
			t.Fatalf("PATCH %s: ETag %s is not the file's", p, r.header.Get("ETag"))
		}
		cfg, _, err := e.store.Load()
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	// A member merges; siblings stay.
	cfg := patch(`{"channel": {"max_kbps": 500}}`)
	if cfg.Channel.MaxKbps != 500 || cfg.Channel.ExpireSeconds != 60 || cfg.PublicAddress != "203.0.113.10" {
		t.Fatalf("merge: %+v", cfg)
	}
	// Objects merge recursively, arrays replace.
	cfg = patch(`{"tracker": {"trackers": ["a.example", "b.example"], "refresh_seconds": 300}}`)
	cfg = patch(`{"tracker": {"trackers": ["c.example"]}}`)
	if strings.Join(cfg.Tracker.Trackers, ",") != "c.example" || cfg.Tracker.RefreshSeconds != 300 {
		t.Fatalf("array replace: %+v", cfg.Tracker)
	}
	// null removes: back to the default.
	cfg = patch(`{"channel": {"max_kbps": null}, "tracker": null, "public_address": null}`)
	if cfg.Channel.MaxKbps != 0 || cfg.Tracker.RefreshSeconds != 600 || cfg.Tracker.Trackers != nil || cfg.PublicAddress != "" {
		t.Fatalf("null: %+v %+v %q", cfg.Channel, cfg.Tracker, cfg.PublicAddress)
	}
	// The xmpp array replaced with placeholders keeps the secrets.
	cfg = patch(`{"xmpp": [{"name": "donor", "type": "client", "jid": "relay@example.net", "password": "********", "policy": "roster"}]}`)
	if len(cfg.XMPP) != 1 || cfg.XMPP[0].Password != "account-password" || cfg.XMPP[0].Policy != "roster" {
		t.Fatalf("xmpp replace: %+v", cfg.XMPP)
	}
	// Secrets not mentioned stay.
	if cfg.TURN.Secret != "turn-secret" {
		t.Fatalf("turn secret lost: %+v", cfg.TURN)
	}
	// An empty patch is no change.
	applies := e.d.applyCount()
	patch(`{}`)
	if e.d.applyCount() != applies {
		t.Fatal("empty patch applied")
	}
	// Unknown keys in a patch are named with their path.
	r := e.do(t, "PATCH", "/v1/config", `{"xmpp": [{"type": "component", "bogus": 1}], "stun": {"prot": 1}}`, jsonCT)
	er := decodeErr(t, r)
	if r.status != 400 || !hasField(er, "xmpp[0].bogus") || !hasField(er, "stun.prot") {
		t.Fatalf("unknown keys: %s", r)
	}
	// A non-object patch replaces the document: not an object, refused.
	if r := e.do(t, "PATCH", "/v1/config", `"x"`, jsonCT); r.status != 400 {
		t.Fatalf("string patch: %s", r)
	}
}

// TestConcurrentPutsSameETag: two writers holding the same ETag, many
// rounds: exactly one wins each round, the other gets 412.
func TestConcurrentPutsSameETag(t *testing.T) {
	e := startAPI(t, "", APIOptions{}, 0, -1)
	for round := range 25 {
		etag := ETag(e.fileBytes(t))
		var wg sync.WaitGroup
		statuses := make([]int, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				patch := `{"channel": {"max_kbps": ` + []string{"100", "200"}[i] + `0` + string(rune('0'+round%10)) + `}}`
				r, err := e.try("PATCH", "/v1/config", patch, withHeaders(jsonCT, "If-Match", etag))
				if err != nil {
					t.Error(err)
					return
				}
				statuses[i] = r.status
			}()
		}
		wg.Wait()
		if !(statuses[0] == 200 && statuses[1] == 412) && !(statuses[0] == 412 && statuses[1] == 200) {
			t.Fatalf("round %d: statuses %v, want one 200 and one 412", round, statuses)
		}
	}
	if n := e.d.applyCount(); n != 25 {
		t.Fatalf("%d applies, want 25", n)
	}
}

func TestConfigUnreadable(t *testing.T) {
	e := startAPI(t, "", APIOptions{}, 0, -1)
	if err := os.WriteFile(e.cfgPath, []byte("{ torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := e.do(t, "GET", "/v1/config", "", nil); r.status != 500 || decodeErr(t, r).Code != CodeConfigUnreadable {
		t.Fatalf("GET: %s", r)
	}
	if r := e.do(t, "PATCH", "/v1/config", `{}`, jsonCT); r.status != 409 || decodeErr(t, r).Code != CodeConfigUnreadable {
		t.Fatalf("PATCH: %s", r)
	}
	// A whole document without placeholders repairs it.
	if r := e.do(t, "PUT", "/v1/config", baseDoc, jsonCT); r.status != 200 {
		t.Fatalf("PUT: %s", r)
	}
	if _, _, err := e.store.Load(); err != nil {
		t.Fatal(err)
	}
}
