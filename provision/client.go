package provision

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Client talks to the API, over the unix socket (NewClient) or TCP with
// the bearer token (NewTCPClient). Every method returns an *Error for an
// error answer of the API (errors.As), carrying its status, code, message
// and field errors; transport failures are returned wrapped.
type Client struct {
	base string
	hc   *http.Client

	mu    sync.Mutex
	token string // TCP only; replaced by RotateToken
}

// NewClient talks to the API's unix socket at socketPath.
func NewClient(socketPath string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConns:    2,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{base: "http://localhost", hc: &http.Client{Transport: tr}}
}

// NewTCPClient talks to the API's TCP listener at baseURL
// ("http://127.0.0.1:8787") with the bearer token.
func NewTCPClient(baseURL, token string) *Client {
	tr := &http.Transport{MaxIdleConns: 2, IdleConnTimeout: 30 * time.Second} // no Proxy: the token goes to the API only
	return &Client{base: strings.TrimRight(baseURL, "/"), hc: &http.Client{Transport: tr}, token: token}
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// response is a successful answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

// maxResponse bounds what the client reads from an answer.
const maxResponse = 16 << 20

func (c *Client) do(ctx context.Context, method, path string, body []byte, header map[string]string) (*response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	for k, v := range header {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	req.Header.Set("Accept", "application/json")
	c.mu.Lock()
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	c.mu.Unlock()
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 400 {
		return nil, decodeError(resp.StatusCode, data)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// decodeError reads an error document; an answer that is not one (a proxy
// page, say) becomes an *Error with code CodeHTTP.
func decodeError(status int, data []byte) *Error {
	var e Error
	if err := json.Unmarshal(data, &e); err != nil || e.Code == "" {
		msg := strings.TrimSpace(string(data))
		if msg == "" {
			msg = http.StatusText(status)
		}
		return &Error{Status: status, Code: CodeHTTP, Message: truncate(msg, 200)}
	}
	e.Status = status
	return &e
}

// Status returns the daemon's status document.
func (c *Client) Status(ctx context.Context) (json.RawMessage, error) {
	r, err := c.do(ctx, http.MethodGet, "/v1/status", nil, nil)
	if err != nil {
		return nil, err
	}
	return r.body, nil
}

// GetConfig returns the configuration document (secrets redacted as
// Placeholder) and its ETag, to send back with PutConfig or PatchConfig.
func (c *Client) GetConfig(ctx context.Context) (doc []byte, etag string, err error) {
	r, err := c.do(ctx, http.MethodGet, "/v1/config", nil, nil)
	if err != nil {
		return nil, "", err
	}
	return r.body, r.header.Get("ETag"), nil
}

// PutConfig replaces the whole configuration and returns the new ETag.
// With etag set, the change is refused (412, CodePrecondition) if the
// configuration changed since it was read; secrets left as Placeholder are
// kept.
func (c *Client) PutConfig(ctx context.Context, doc []byte, etag string) (string, error) {
	r, err := c.do(ctx, http.MethodPut, "/v1/config", doc, map[string]string{"Content-Type": "application/json", "If-Match": etag})
	if err != nil {
		return "", err
	}
	return r.header.Get("ETag"), nil
}

// PatchConfig applies an RFC 7386 JSON merge patch to the configuration
// and returns the new ETag; etag as for PutConfig.
func (c *Client) PatchConfig(ctx context.Context, patch []byte, etag string) (string, error) {
	r, err := c.do(ctx, http.MethodPatch, "/v1/config", patch, map[string]string{"Content-Type": "application/merge-patch+json", "If-Match": etag})
	if err != nil {
		return "", err
	}
	return r.header.Get("ETag"), nil
}

// Channels returns the live channels.
func (c *Client) Channels(ctx context.Context) (json.RawMessage, error) {
	r, err := c.do(ctx, http.MethodGet, "/v1/channels", nil, nil)
	if err != nil {
		return nil, err
	}
	return r.body, nil
}

// Usage returns the usage history (GET /v1/usage).
func (c *Client) Usage(ctx context.Context) (json.RawMessage, error) {
	r, err := c.do(ctx, http.MethodGet, "/v1/usage", nil, nil)
	if err != nil {
		return nil, err
	}
	return r.body, nil
}

// KillChannel ends a channel (404, CodeChannelNotFound, if there is none).
func (c *Client) KillChannel(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/channels/"+url.PathEscape(id), nil, nil)
	return err
}

// Logs returns up to n recent log lines (n <= 0: the server's default),
// oldest first.
func (c *Client) Logs(ctx context.Context, n int) ([]string, error) {
	path := "/v1/logs"
	if n > 0 {
		path += "?n=" + strconv.Itoa(n)
	}
	r, err := c.do(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return nil, err
	}
	var doc LogsDocument
	if err := json.Unmarshal(r.body, &doc); err != nil {
		return nil, fmt.Errorf("GET %s: decode answer: %w", path, err)
	}
	return doc.Lines, nil
}

// RotateToken replaces the API's bearer token and returns the new one. A
// TCP client switches to it.
func (c *Client) RotateToken(ctx context.Context) (string, error) {
	r, err := c.do(ctx, http.MethodPost, "/v1/token/rotate", nil, nil)
	if err != nil {
		return "", err
	}
	var doc TokenDocument
	if err := json.Unmarshal(r.body, &doc); err != nil || doc.Token == "" {
		return "", fmt.Errorf("POST /v1/token/rotate: no token in the answer")
	}
	c.mu.Lock()
	if c.token != "" {
		c.token = doc.Token
	}
	c.mu.Unlock()
	return doc.Token, nil
}
