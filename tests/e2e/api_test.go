package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/provision"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// TestProvisioningAPI drives a running relayd through its API socket with
// the same client the CLI uses: status, channels, redacted config,
// validation errors naming the field, stale ETags, and a live change of
// port range and bandwidth limit that leaves the call in progress alone.
func TestProvisioningAPI(t *testing.T) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jnp", "relay", "caller", "callee")
	srv, err := harness.StartProsody(ctx, harness.ServerOptions{Netns: lan.NS("relay"), Users: map[string]string{user: password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	w := &world{lan: lan, srv: srv, req: srv.Requester(user, password)}
	rd := w.startRelay(ctx, t, w.relayConfig())
	if _, err := rd.WaitLog(ctx, "provisioning API listening", 1, nil); err != nil {
		t.Fatal(err)
	}
	api := provision.NewClient(rd.APISocket)
	defer api.Close()

	c := w.setUpCall(ctx, t, w.requestChannel(ctx, t))
	c.exchange(ctx, t, 50)

	var status struct {
		Sessions []struct{ Name, State string }
		Channels struct{ Active, Capacity int }
	}
	raw, err := api.Status(ctx)
	if err != nil || json.Unmarshal(raw, &status) != nil {
		t.Fatalf("status: %s %v", raw, err)
	}
	if status.Channels.Active != 1 || status.Channels.Capacity != 25 || len(status.Sessions) != 1 || status.Sessions[0].State != "online" {
		t.Fatalf("status %s", raw)
	}
	raw, err = api.Channels(ctx)
	if err != nil || !strings.Contains(string(raw), c.id) {
		t.Fatalf("channels %s %v", raw, err)
	}

	doc, etag, err := api.GetConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(doc), srv.Secret) || !strings.Contains(string(doc), provision.Placeholder) {
		t.Fatalf("config not redacted: %s", doc)
	}

	// Invalid: 400 naming the field, nothing changes.
	_, err = api.PatchConfig(ctx, []byte(`{"ports": {"min": 80}}`), etag)
	var apiErr *provision.Error
	if !errors.As(err, &apiErr) || apiErr.Status != 400 || len(apiErr.Fields) == 0 || apiErr.Fields[0].Field != "ports.min" {
		t.Fatalf("invalid patch: %v %+v", err, apiErr)
	}

	// A live change of range and limit.
	newETag, err := api.PatchConfig(ctx, []byte(`{"ports": {"min": 40500, "max": 40599}, "channel": {"max_kbps": 1500}}`), etag)
	if err != nil {
		t.Fatal(err)
	}
	// The same change again with the old ETag: someone else changed it first.
	if _, err := api.PatchConfig(ctx, []byte(`{"channel": {"max_kbps": 1}}`), etag); !errors.As(err, &apiErr) || apiErr.Status != 412 {
		t.Fatalf("stale ETag: %v", err)
	}
	c.exchange(ctx, t, 50)
	res := w.requestChannel(ctx, t)
	if p, _ := strconv.Atoi(res.Channel["localport"]); p < 40500 || p > 40599 || res.Channel["maxkbps"] != "1500" {
		t.Fatalf("channel after the change %+v", res.Channel)
	}
	// Persisted, secrets intact.
	saved, _, err := provision.NewStore(rd.ConfigPath).Load()
	if err != nil {
		t.Fatal(err)
	}
	if saved.Ports.Min != 40500 || saved.Channel.MaxKbps != 1500 || saved.XMPP[0].Secret != srv.Secret {
		t.Fatalf("saved config %+v", saved)
	}
	if _, etag2, _ := api.GetConfig(ctx); etag2 != newETag {
		t.Fatalf("ETag %s after the change, want %s", etag2, newETag)
	}

	// Kill the call's channel through the API.
	if err := api.KillChannel(ctx, c.id); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.WaitLog(ctx, "channel ended", 1, func(r harness.LogRecord) bool { return r.Str("channel") == c.id && r.Str("reason") == "killed" }); err != nil {
		t.Fatal(err)
	}
	if err := api.KillChannel(ctx, c.id); !errors.As(err, &apiErr) || apiErr.Status != 404 {
		t.Fatalf("kill of an ended channel: %v", err)
	}
	lines, err := api.Logs(ctx, 20)
	if err != nil || len(lines) == 0 {
		t.Fatalf("logs: %v %d", err, len(lines))
	}
}

// TestSocketActivationAndCLI starts relayd the way systemd does with
// relayd-provision.socket (the listening socket handed over as fd 3 with
// LISTEN_FDS/LISTEN_PID) and talks to it with relayd's own CLI.
func TestSocketActivationAndCLI(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "activated.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	lnFile, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // the duplicate in lnFile keeps the socket listening
	cfg := config.Default()
	cfg.PublicAddress, cfg.ListenAddress = "127.0.0.1", "127.0.0.1"
	cfg.Ports = config.PortRange{Min: 29200, Max: 29299}
	cfg.STUN.Enabled = false
	cfg.XMPP = []config.Service{{Name: "nowhere", Type: "component", Server: "127.0.0.1:9", Domain: "relay.localhost", Secret: "s"}}
	doc, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(dir, "relayd.json")
	if err := os.WriteFile(cfgPath, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	// sh sets LISTEN_PID to its own PID and execs relayd, which keeps it.
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -config "$1" -api-socket "" -state-dir "$2"`, relaydBin, cfgPath, dir)
	cmd.ExtraFiles = []*os.File{lnFile}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	lnFile.Close()

	cli := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		b, err := exec.CommandContext(ctx, relaydBin, append([]string{"-api-socket", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("relayd %v: %v\n%s\nrelayd output:\n%s", args, err, b, out.String())
		}
		return string(b)
	}
	// The activated socket accepts before relayd is even ready: the
	// kernel queues the connection until relayd serves it.
	if st := cli("status"); !strings.Contains(st, `"name": "nowhere"`) || !strings.Contains(st, `"capacity": 25`) {
		t.Fatalf("status: %s", st)
	}
	if got := cli("config", "get"); !strings.Contains(got, provision.Placeholder) || strings.Contains(got, `"secret": "s"`) {
		t.Fatalf("config get: %s", got)
	}
	patched := filepath.Join(dir, "new.json")
	cfg.Channel.MaxKbps = 777
	doc, _ = json.Marshal(cfg)
	os.WriteFile(patched, doc, 0o600)
	cli("config", "set", patched)
	saved, err := config.Load(cfgPath)
	if err != nil || saved.Channel.MaxKbps != 777 {
		t.Fatalf("after config set: %+v %v", saved.Channel, err)
	}
	if got := cli("channels"); strings.TrimSpace(got) != "null" && strings.TrimSpace(got) != "[]" {
		t.Fatalf("channels: %s", got)
	}
	b, err := exec.Command(relaydBin, "-api-socket", sock, "channels", "kill", "nope").CombinedOutput()
	if err == nil || !strings.Contains(string(b), "not_found") && !strings.Contains(string(b), "no such") {
		t.Fatalf("kill of an unknown channel: %v %s", err, b)
	}
}
