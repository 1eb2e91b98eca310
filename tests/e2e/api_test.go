package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

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
