package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// TestTrackerListsHealthyRelays runs two relays on one Prosody: A as the
// component relay.localhost, B as the account tracker@localhost with A as
// its configured tracker. B crawls A, checks that A grants channels, and
// lists it in its own <services/>; once A is gone, B stops listing it.
func TestTrackerListsHealthyRelays(t *testing.T) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jnt", "relay")
	srv, err := harness.StartProsody(ctx, harness.ServerOptions{Netns: lan.NS("relay"),
		Users: map[string]string{user: password, "tracker": "trackerpw"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("prosody logs:\n%s", srv.Logs())
		}
		srv.Close()
	})
	w := &world{lan: lan, srv: srv, req: srv.Requester(user, password)}
	relayA := w.startRelay(ctx, t, w.relayConfig())

	cfgB := w.relayConfig()
	cfgB.Ports = config.PortRange{Min: 40200, Max: 40299}
	cfgB.XMPP = []config.Service{{Name: "tracker-account", Type: "client", Server: srv.C2S.String(),
		JID: "tracker@localhost", Password: "trackerpw", CAFile: srv.CAFile}}
	cfgB.Tracker = config.Tracker{Trackers: []string{srv.ComponentDomain}, RefreshSeconds: 1}
	relayB := startRelayd(t, lan.NS("relay"), cfgB)
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	online, err := relayB.WaitLog(wctx, "xmpp client online", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	addrB := online.Str("address")
	if _, err := relayB.WaitLog(ctx, "tracker: relay health changed", 1, func(r harness.LogRecord) bool {
		return r.Str("relay") == srv.ComponentDomain && r["healthy"] == true
	}); err != nil {
		t.Fatal(err)
	}
	// services returns B's <services/> entries as "kind policy address".
	services := func() []string { return servicesOf(ctx, t, w, addrB) }
	listed := services()
	want := []string{"relay public " + addrB, "tracker public " + srv.ComponentDomain, "relay public " + srv.ComponentDomain}
	if !slices.Equal(listed, want) {
		t.Errorf("B's services %q, want %q", listed, want)
	}
	// A goes away: its health check fails and B stops listing it.
	if err := relayA.Stop(); err != nil {
		t.Fatal(err)
	}
	// B can no longer crawl A: the entry goes stale and is forgotten.
	if _, err := relayB.WaitLog(ctx, "tracker: relay forgotten", 1, func(r harness.LogRecord) bool {
		return r.Str("relay") == srv.ComponentDomain
	}); err != nil {
		t.Fatal(err)
	}
	if listed := services(); slices.Contains(listed, "relay public "+srv.ComponentDomain) {
		t.Errorf("B still lists the dead relay: %q", listed)
	}
}
