package e2e

import (
	"context"
	"encoding/xml"
	"slices"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/directory"
	"github.com/jnrelay/jnrelay/tests/harness"
)

const directoryNode = "jnrelay-relays"

// createDirectoryNode creates the directory node as the server's
// administrator (on Prosody only administrators create nodes: the
// provider does it once), with the form relayd would send.
func createDirectoryNode(ctx context.Context, t *testing.T, srv *harness.XMPPServer, admin, pw string) {
	t.Helper()
	req := srv.Requester(admin, pw)
	outs, err := req.Run(ctx, harness.RequestArgs{Relay: srv.PubsubDomain, Set: true, Raw: directory.CreateNodeXML(directoryNode)})
	if err != nil || len(outs) != 1 || outs[0].Type != "result" {
		t.Fatalf("create node %s on %s: %+v %v", directoryNode, srv.PubsubDomain, outs, err)
	}
}

// servicesOf returns relay's <services/> entries, asked by the world's
// requester, as "kind policy address".
func servicesOf(ctx context.Context, t *testing.T, w *world, relay string) []string {
	t.Helper()
	outs, err := w.req.Run(ctx, harness.RequestArgs{Relay: relay, Raw: `<services xmlns='http://jabber.org/protocol/jinglenodes'/>`})
	if err != nil || len(outs) != 1 || outs[0].Type != "result" {
		t.Fatalf("services of %s: %+v %v", relay, outs, err)
	}
	var doc struct {
		Entries []struct {
			XMLName xml.Name
			Policy  string `xml:"policy,attr"`
			Address string `xml:"address,attr"`
		} `xml:",any"`
	}
	if err := xml.Unmarshal([]byte(outs[0].Payload), &doc); err != nil {
		t.Fatalf("services payload %q: %v", outs[0].Payload, err)
	}
	var out []string
	for _, e := range doc.Entries {
		out = append(out, e.XMLName.Local+" "+e.Policy+" "+e.Address)
	}
	return out
}

// TestDirectoryOnProsody: relay A (the component relay.localhost) and
// relay C (the account relayc@localhost) publish their items to a node
// of Prosody's publish-subscribe service; relay B (tracker@localhost)
// subscribes to it and lists both in its <services/> answer to a
// client. A stops cleanly: its item goes (Prosody lets a publisher of an
// open node publish, not retract: A marks it stopped) and B stops
// listing it, while C stays.
func TestDirectoryOnProsody(t *testing.T) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jnd", "relay")
	srv, err := harness.StartProsody(ctx, harness.ServerOptions{Netns: lan.NS("relay"), Admins: []string{"diradmin"},
		Users: map[string]string{user: password, "tracker": "trackerpw", "relayc": "relaycpw", "diradmin": "diradminpw"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("prosody logs:\n%s", srv.Logs())
		}
		srv.Close()
	})
	createDirectoryNode(ctx, t, srv, "diradmin", "diradminpw")
	w := &world{lan: lan, srv: srv, req: srv.Requester(user, password)}
	dir := []config.DirectoryNode{{Service: srv.PubsubDomain, Node: directoryNode}}

	cfgA := w.relayConfig()
	cfgA.STUN.Enabled = false // the three relays share a namespace: no STUN listing to fight over
	cfgA.Directory = config.Directory{Publish: dir, RefreshSeconds: 60, Country: "DE"}
	relayA := w.startRelay(ctx, t, cfgA)

	cfgC := w.relayConfig()
	cfgC.Ports = config.PortRange{Min: 40300, Max: 40399}
	cfgC.STUN.Enabled = false
	cfgC.XMPP = []config.Service{{Name: "relayc", Type: "client", Server: srv.C2S.String(),
		JID: "relayc@localhost", Password: "relaycpw", CAFile: srv.CAFile}}
	cfgC.Directory = config.Directory{Publish: dir, RefreshSeconds: 60}
	relayC := startRelayd(t, lan.NS("relay"), cfgC)
	onlineC, err := relayC.WaitLog(ctx, "xmpp client online", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	addrC := onlineC.Str("address")

	for _, rd := range []*harness.Relayd{relayA, relayC} {
		if _, err := rd.WaitLog(ctx, "directory: published", 1, nil); err != nil {
			t.Fatal(err)
		}
	}

	cfgB := w.relayConfig()
	cfgB.Ports = config.PortRange{Min: 40200, Max: 40299}
	cfgB.STUN.Enabled = false
	cfgB.XMPP = []config.Service{{Name: "tracker-account", Type: "client", Server: srv.C2S.String(),
		JID: "tracker@localhost", Password: "trackerpw", CAFile: srv.CAFile}}
	cfgB.Directory = config.Directory{Subscribe: dir, RefreshSeconds: 60}
	relayB := startRelayd(t, lan.NS("relay"), cfgB)
	onlineB, err := relayB.WaitLog(ctx, "xmpp client online", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	addrB := onlineB.Str("address")
	for _, relay := range []string{srv.ComponentDomain, addrC} {
		if _, err := relayB.WaitLog(ctx, "directory: relay learned", 1, func(r harness.LogRecord) bool {
			return r.Str("relay") == relay && r.Str("trust") == "verified"
		}); err != nil {
			t.Fatal(err)
		}
	}
	listed := servicesOf(ctx, t, w, addrB)
	// B itself, then the directory's relays: as many free channels each,
	// so by address.
	want := []string{"relay public " + addrB, "relay public " + srv.ComponentDomain, "relay public " + addrC}
	if !slices.Equal(listed, want) {
		t.Errorf("B's services %q, want %q", listed, want)
	}

	// A stops cleanly (SIGTERM: drain, then exit): B hears of it through
	// its subscription and drops it; C stays.
	if err := relayA.Stop(); err != nil {
		t.Fatal(err)
	}
	if relayA.Count("directory: item marked stopped (retraction refused)", nil)+relayA.Count("directory: item retracted", nil) != 1 {
		t.Error("A neither retracted nor marked its item stopped")
	}
	if _, err := relayB.WaitLog(ctx, "directory: relay forgotten", 1, func(r harness.LogRecord) bool {
		return r.Str("relay") == srv.ComponentDomain
	}); err != nil {
		t.Fatal(err)
	}
	want = []string{"relay public " + addrB, "relay public " + addrC}
	if listed := servicesOf(ctx, t, w, addrB); !slices.Equal(listed, want) {
		t.Errorf("after A stopped, B's services %q, want %q", listed, want)
	}
}
