package provision

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestTCPBearerToken(t *testing.T) {
	e := startAPI(t, "", APIOptions{TCP: "127.0.0.1:0"}, 0, -1)
	ctx := context.Background()
	tokPath := filepath.Join(e.dir, "state", TokenFile)
	fi, err := os.Stat(tokPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi.Mode(), err)
	}
	raw, _ := os.ReadFile(tokPath)
	tok := strings.TrimSpace(string(raw))
	if b, err := base64.RawURLEncoding.DecodeString(tok); err != nil || len(b) != 32 {
		t.Fatalf("token %q is not 32 bytes of base64url: %v", tok, err)
	}
	before, applies := e.fileBytes(t), e.d.applyCount()

	for name, auth := range map[string]string{"none": "", "wrong": "Bearer " + tok[:len(tok)-1] + "x", "basic": "Basic " + tok, "empty": "Bearer "} {
		for _, m := range []string{"GET", "PATCH"} {
			r := e.do(t, m, e.tcpURL+"/v1/config", `{"channel": {"max_kbps": 1}}`, withHeaders(jsonCT, "Authorization", auth))
			if r.status != 401 || decodeErr(t, r).Code != CodeUnauthorized || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s token: %s", m, name, r)
			}
		}
	}
	e.unchanged(t, before, applies)

	c := NewTCPClient(e.tcpURL, tok)
	defer c.Close()
	if _, err := c.Status(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PatchConfig(ctx, []byte(`{"channel": {"max_kbps": 64}}`), ""); err != nil {
		t.Fatal(err)
	}

	// Rotation through TCP: the client switches, the old token is dead at once.
	newTok, err := c.RotateToken(ctx)
	if err != nil || newTok == tok {
		t.Fatalf("rotate: %q %v", newTok, err)
	}
	if raw, _ := os.ReadFile(tokPath); strings.TrimSpace(string(raw)) != newTok {
		t.Fatal("token file not replaced")
	}
	if fi, _ := os.Stat(tokPath); fi.Mode().Perm() != 0o600 {
		t.Fatalf("rotated token mode %v", fi.Mode())
	}
	if r := e.do(t, "GET", e.tcpURL+"/v1/status", "", map[string]string{"Authorization": "Bearer " + tok}); r.status != 401 {
		t.Fatalf("old token still works: %s", r)
	}
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("new token: %v", err)
	}

	// Rotation through the unix socket (root) locks the TCP client out.
	uc := NewClient(e.sock)
	defer uc.Close()
	third, err := uc.RotateToken(ctx)
	if err != nil || third == newTok {
		t.Fatalf("unix rotate: %v", err)
	}
	var ae *Error
	if _, err := c.Status(ctx); !errors.As(err, &ae) || ae.Status != 401 {
		t.Fatalf("token rotated elsewhere still works: %v", err)
	}
	// A restart keeps the token.
	api2 := NewAPI(e.d, e.store, APIOptions{StateDir: filepath.Join(e.dir, "state"), TCP: "127.0.0.1:0"})
	ln, err := api2.ListenTCP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if !api2.tokens.valid(third) {
		t.Fatal("token not kept across restarts")
	}
}

func TestRotateWithoutStateDir(t *testing.T) {
	a := NewAPI(newFakeDaemon(), NewStore(filepath.Join(t.TempDir(), "x.json")), APIOptions{})
	_, err := a.RotateToken()
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != CodeTokenUnavailable {
		t.Fatalf("%v", err)
	}
	if _, err := NewAPI(newFakeDaemon(), nil, APIOptions{TCP: "127.0.0.1:0"}).ListenTCP(context.Background()); err == nil {
		t.Fatal("TCP without a state directory accepted")
	}
	if ln, err := a.ListenTCP(context.Background()); ln != nil || err != nil {
		t.Fatal("TCP is off by default")
	}
}

func TestUnidentifiedCallerIsForbidden(t *testing.T) {
	a := NewAPI(newFakeDaemon(), NewStore(filepath.Join(t.TempDir(), "x.json")), APIOptions{})
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/v1/status", nil))
	if rec.Code != 403 {
		t.Fatalf("no peer: %d", rec.Code)
	}
}

func TestHostRejected(t *testing.T) {
	e := startAPI(t, "", APIOptions{TCP: "127.0.0.1:0", Hosts: []string{"relay.lan", "192.168.1.2"}}, 0, -1)
	raw, _ := os.ReadFile(filepath.Join(e.dir, "state", TokenFile))
	bearer := "Bearer " + strings.TrimSpace(string(raw))
	before, applies := e.fileBytes(t), e.d.applyCount()
	for _, h := range []string{"evil.example", "evil.example:80", "localhost.evil.example", "127.0.0.2", "relay.lan.evil"} {
		r := e.do(t, "GET", "/v1/status", "", map[string]string{"Host": h})
		if r.status != 421 || decodeErr(t, r).Code != CodeMisdirected {
			t.Errorf("unix Host %q: %s", h, r)
		}
		r = e.do(t, "PATCH", e.tcpURL+"/v1/config", `{"channel": {"max_kbps": 1}}`, withHeaders(jsonCT, "Host", h, "Authorization", bearer))
		if r.status != 421 {
			t.Errorf("tcp Host %q: %s", h, r)
		}
	}
	if r := e.do(t, "GET", e.tcpURL+"/v1/status", "", map[string]string{"Host": "unix", "Authorization": bearer}); r.status != 421 {
		t.Errorf("tcp Host unix: %s", r)
	}
	e.unchanged(t, before, applies)
	for _, h := range []string{"localhost", "localhost:1234", "127.0.0.1", "[::1]:8080", "relay.lan", "RELAY.LAN.", "192.168.1.2:8787", "unix"} {
		if r := e.do(t, "GET", "/v1/status", "", map[string]string{"Host": h}); r.status != 200 {
			t.Errorf("unix Host %q: %s", h, r)
		}
	}
	if r := e.do(t, "GET", e.tcpURL+"/v1/status", "", map[string]string{"Host": "relay.lan:8787", "Authorization": bearer}); r.status != 200 {
		t.Errorf("tcp configured host: %s", r)
	}
}

func TestCrossOriginRejected(t *testing.T) {
	e := startAPI(t, "", APIOptions{TCP: "127.0.0.1:0"}, 0, -1)
	raw, _ := os.ReadFile(filepath.Join(e.dir, "state", TokenFile))
	bearer := "Bearer " + strings.TrimSpace(string(raw))
	before, applies := e.fileBytes(t), e.d.applyCount()
	bad := []map[string]string{
		{"Origin": "http://evil.example"},
		{"Origin": "null"},
		{"Origin": "http://localhost:8080"}, // another origin on the same name
		{"Origin": "file://"},
		{"Referer": "http://evil.example/page"},
		{"Referer": "https://localhost/"}, // https default port differs
		{"Sec-Fetch-Site": "cross-site"},
	}
	for _, h := range bad {
		r := e.do(t, "PUT", "/v1/config", baseDoc, withHeaders(h, "Content-Type", "application/json"))
		if r.status != 403 || decodeErr(t, r).Code != CodeCrossOrigin {
			t.Errorf("unix %v: %s", h, r)
		}
		r = e.do(t, "POST", e.tcpURL+"/v1/token/rotate", "", withHeaders(h, "Authorization", bearer))
		if r.status != 403 {
			t.Errorf("tcp %v: %s", h, r)
		}
	}
	e.unchanged(t, before, applies)
	if raw2, _ := os.ReadFile(filepath.Join(e.dir, "state", TokenFile)); string(raw2) != string(raw) {
		t.Fatal("token rotated by a cross-origin request")
	}
	good := []map[string]string{
		{"Origin": "http://localhost"},
		{"Referer": "http://localhost/ui/setup"},
		{"Sec-Fetch-Site": "same-origin"},
	}
	for _, h := range good {
		if r := e.do(t, "GET", "/v1/status", "", h); r.status != 200 {
			t.Errorf("unix %v: %s", h, r)
		}
	}
	tcpOrigin := e.tcpURL
	if r := e.do(t, "GET", e.tcpURL+"/v1/status", "", map[string]string{"Origin": tcpOrigin, "Authorization": bearer}); r.status != 200 {
		t.Errorf("tcp same origin: %s", r)
	}
}

func TestListenUnix(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "api.sock")

	// A stale socket (its listener gone, the file left) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln, err := ListenUnix(ctx, path, 0, 4242)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != 4242 {
		t.Fatalf("socket mode %v gid %d, want 0660 gid 4242", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid)
	}
	// A live one is not touched.
	if _, err := ListenUnix(ctx, path, 0, -1); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("live socket: %v", err)
	}
	ln.Close()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("socket not removed on close")
	}
	// Nor is a file that is not a socket.
	if err := os.WriteFile(path, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(ctx, path, 0, -1); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep" {
		t.Fatal("regular file clobbered")
	}
}

// requestHelper runs in a child process (under another uid): one request
// over the unix socket, the outcome as JSON on stdout.
func requestHelper() int {
	out := struct {
		Status int    `json:"status"`
		Body   string `json:"body"`
		Err    string `json:"err,omitempty"`
	}{}
	defer func() { _ = json.NewEncoder(os.Stdout).Encode(out) }()
	sock := os.Getenv("PROVISION_SOCK")
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	var body io.Reader
	if b := os.Getenv("PROVISION_BODY"); b != "" {
		body = strings.NewReader(b)
	}
	req, err := http.NewRequest(os.Getenv("PROVISION_METHOD"), "http://localhost"+os.Getenv("PROVISION_PATH"), body)
	if err != nil {
		out.Err = err.Error()
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		out.Err = err.Error()
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out.Status, out.Body = resp.StatusCode, string(b)
	return 0
}

// worldDir is a temporary directory other uids can traverse, or a skip
// saying why there is none.
func worldDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "provision-peer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			t.Skipf("cannot test other uids: %s is not traversable by others (set TMPDIR to a world-traversable directory)", p)
		}
		if p == "/" {
			break
		}
	}
	return dir
}

type asResult struct {
	Status int    `json:"status"`
	Body   string `json:"body"`
	Err    string `json:"err"`
}

// runAs makes one request from a child process with the given
// credentials (supplementary groups exactly groups).
func runAs(t *testing.T, bin, sock string, uid, gid uint32, groups []uint32, method, path, body string) asResult {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", helperEnv+"=request", "PROVISION_SOCK="+sock, "PROVISION_METHOD="+method, "PROVISION_PATH="+path, "PROVISION_BODY="+body)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}}
	cmd.Dir = "/"
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("helper as uid %d: %v: %s", uid, err, ee.Stderr)
		}
		t.Fatalf("helper as uid %d: %v", uid, err)
	}
	var r asResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	return r
}

// TestPeerCredentialRoles runs requests from child processes under other
// uids and groups: the admin group reads only, the admin uid writes,
// anyone else is refused, by the socket's mode (0660) and, when the
// socket is opened to all, by SO_PEERCRED.
func TestPeerCredentialRoles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test starts helpers under other uids")
	}
	dir := worldDir(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "provision.test")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	const (
		adminGID = 4242
		adminUID = 4243
		nobody   = 65534
	)
	e := startAPI(t, dir, APIOptions{AdminUID: adminUID, AdminGID: adminGID}, 0o660, adminGID)
	before, applies := e.fileBytes(t), e.d.applyCount()
	patch := `{"channel": {"max_kbps": 777}}`

	// Read-only: primary group, then supplementary group (SO_PEERGROUPS).
	for _, who := range []struct {
		name   string
		gid    uint32
		groups []uint32
	}{{"primary gid", adminGID, []uint32{}}, {"supplementary group", nobody, []uint32{adminGID}}} {
		for _, path := range []string{"/v1/status", "/v1/config", "/v1/channels", "/v1/usage", "/v1/logs"} {
			if r := runAs(t, bin, e.sock, nobody, who.gid, who.groups, "GET", path, ""); r.Status != 200 {
				t.Errorf("admin group (%s) GET %s: %+v", who.name, path, r)
			}
		}
		for _, req := range [][3]string{{"PUT", "/v1/config", baseDoc}, {"PATCH", "/v1/config", patch}, {"DELETE", "/v1/channels/aa01", ""}, {"POST", "/v1/token/rotate", ""}} {
			r := runAs(t, bin, e.sock, nobody, who.gid, who.groups, req[0], req[1], req[2])
			if r.Status != 403 || !strings.Contains(r.Body, CodeForbidden) {
				t.Errorf("admin group (%s) %s %s: %+v", who.name, req[0], req[1], r)
			}
		}
	}
	e.unchanged(t, before, applies)
	if _, err := os.Stat(filepath.Join(dir, "state", TokenFile)); !errors.Is(err, os.ErrNotExist) {
		t.Error("read-only caller created a token")
	}

	// Others cannot even connect to the 0660 socket.
	if r := runAs(t, bin, e.sock, nobody, nobody, []uint32{}, "GET", "/v1/status", ""); r.Err == "" || !strings.Contains(r.Err, "permission denied") {
		t.Errorf("other uid on a 0660 socket: %+v", r)
	}

	// The admin uid writes.
	if r := runAs(t, bin, e.sock, adminUID, nobody, []uint32{adminGID}, "PATCH", "/v1/config", patch); r.Status != 200 {
		t.Fatalf("admin uid PATCH: %+v", r)
	}
	if cfg, _, _ := e.store.Load(); cfg.Channel.MaxKbps != 777 {
		t.Fatal("admin change not saved")
	}

	// With the socket open to everyone, SO_PEERCRED alone refuses others.
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	o := startAPI(t, open, APIOptions{AdminUID: adminUID, AdminGID: adminGID}, 0o666, -1)
	before, applies = o.fileBytes(t), o.d.applyCount()
	for _, req := range [][3]string{{"GET", "/v1/status", ""}, {"GET", "/v1/config", ""}, {"PATCH", "/v1/config", patch}} {
		r := runAs(t, bin, o.sock, nobody, nobody, []uint32{}, req[0], req[1], req[2])
		if r.Status != 403 || !strings.Contains(r.Body, "uid "+strconv.Itoa(nobody)) {
			t.Errorf("other uid %s %s: %+v", req[0], req[1], r)
		}
	}
	o.unchanged(t, before, applies)
}
