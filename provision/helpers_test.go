package provision

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jnrelay/jnrelay/config"
)

// helperEnv selects what a re-executed test binary does instead of running
// the tests (see TestMain).
const helperEnv = "PROVISION_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "saveloop":
		os.Exit(saveLoopHelper())
	case "request":
		os.Exit(requestHelper())
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// baseDoc has one secret of each kind.
const baseDoc = `{
  "public_address": "203.0.113.10",
  "xmpp": [
    {"name": "provider", "type": "component", "server": "127.0.0.1:5347", "domain": "relay.example.org", "secret": "component-secret"},
    {"name": "donor", "type": "client", "jid": "relay@example.net", "password": "account-password"}
  ],
  "turn": {"host": "turn.example.org", "secret": "turn-secret"}
}
`

func mustParse(t testing.TB, doc string) config.Config {
	t.Helper()
	cfg, err := config.Parse(strings.NewReader(doc))
	if err != nil {
		t.Fatalf("parse test document: %v", err)
	}
	return cfg
}

// fakeDaemon records what the API asks of it.
type fakeDaemon struct {
	mu       sync.Mutex
	applies  int
	applied  []config.Config
	failWith error
	channels map[string]bool
	logs     []string
}

func newFakeDaemon() *fakeDaemon {
	return &fakeDaemon{channels: map[string]bool{"aa01": true, "bb02": true, "turn-7": true}, logs: []string{"one", "two", "three"}}
}

func (d *fakeDaemon) Status() any {
	return map[string]any{"version": "test", "uptime_seconds": 1}
}

func (d *fakeDaemon) Usage() any {
	return map[string]any{"days": []any{map[string]any{"period": "2026-12-06", "bytes": 5, "calls": 1}}}
}

func (d *fakeDaemon) Channels() any {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []map[string]string{}
	for id := range d.channels {
		out = append(out, map[string]string{"id": id})
	}
	return out
}

func (d *fakeDaemon) KillChannel(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.channels[id] {
		return false
	}
	delete(d.channels, id)
	return true
}

func (d *fakeDaemon) Apply(_ context.Context, cfg config.Config) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failWith != nil {
		return d.failWith
	}
	d.applies++
	d.applied = append(d.applied, cfg)
	return nil
}

func (d *fakeDaemon) Logs(n int) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logs[len(d.logs)-min(n, len(d.logs)):]
}

func (d *fakeDaemon) applyCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.applies
}

func (d *fakeDaemon) setFail(err error) {
	d.mu.Lock()
	d.failWith = err
	d.mu.Unlock()
}

// env is an API serving a real unix socket (and, when opts.TCP is set, a
// real TCP listener) over a fake daemon and a store in a temporary
// directory.
type env struct {
	api     *API
	d       *fakeDaemon
	store   *Store
	dir     string
	sock    string
	tcpURL  string
	unix    *http.Client
	tcp     *http.Client
	cfgPath string
}

func startAPI(t *testing.T, dir string, opts APIOptions, sockMode os.FileMode, sockGID int) *env {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	e := &env{d: newFakeDaemon(), dir: dir, sock: filepath.Join(dir, "api.sock"), cfgPath: filepath.Join(dir, "relayd.json")}
	if err := os.WriteFile(e.cfgPath, []byte(baseDoc), 0o640); err != nil {
		t.Fatal(err)
	}
	e.store = NewStore(e.cfgPath)
	if opts.StateDir == "" {
		opts.StateDir = filepath.Join(dir, "state")
	}
	e.api = NewAPI(e.d, e.store, opts)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	serve := func(ln net.Listener) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.api.Serve(ctx, ln); err != nil {
				t.Errorf("serve: %v", err)
			}
		}()
	}
	ln, err := ListenUnix(ctx, e.sock, sockMode, sockGID)
	if err != nil {
		t.Fatal(err)
	}
	serve(ln)
	e.unix = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", e.sock)
	}}}
	t.Cleanup(e.unix.CloseIdleConnections)
	tl, err := e.api.ListenTCP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tl != nil {
		serve(tl)
		e.tcpURL = "http://" + tl.Addr().String()
		e.tcp = &http.Client{Transport: &http.Transport{}}
		t.Cleanup(e.tcp.CloseIdleConnections)
	}
	return e
}

// result is one raw exchange.
type result struct {
	status int
	header http.Header
	body   []byte
}

func (r result) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

// do sends a raw request over the unix socket (or, with url set, to that
// absolute URL over TCP). hdr "Host" sets the Host header.
func (e *env) do(t *testing.T, method, target, body string, hdr map[string]string) result {
	t.Helper()
	r, err := e.try(method, target, body, hdr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// try is do for any goroutine.
func (e *env) try(method, target, body string, hdr map[string]string) (result, error) {
	c, u := e.unix, "http://localhost"+target
	if strings.HasPrefix(target, "http://") {
		c, u = e.tcp, target
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return result{}, err
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return result{}, fmt.Errorf("%s %s: %w", method, target, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return result{}, fmt.Errorf("%s %s: %w", method, target, err)
	}
	return result{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

func (e *env) fileBytes(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// unchanged asserts that nothing was applied or written since before.
func (e *env) unchanged(t *testing.T, before []byte, applies int) {
	t.Helper()
	if got := e.fileBytes(t); !bytes.Equal(got, before) {
		t.Errorf("configuration file changed:\n%s", got)
	}
	if n := e.d.applyCount(); n != applies {
		t.Errorf("daemon applied %d times, want %d", n, applies)
	}
}

var jsonCT = map[string]string{"Content-Type": "application/json"}

func withHeaders(base map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}
