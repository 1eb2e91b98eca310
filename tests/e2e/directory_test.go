package e2e

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/daemon"
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

// startAccountRelay starts a relay in the world's relay namespace,
// registered as the client account user@localhost, on the 100 ports from
// base, without STUN (the relays of a test share a namespace), with dir;
// it returns the relay and its full JID once online.
func startAccountRelay(ctx context.Context, t *testing.T, w *world, base int, user, password string, dir config.Directory) (*harness.Relayd, string) {
	t.Helper()
	cfg := w.relayConfig()
	cfg.Ports = config.PortRange{Min: base, Max: base + 99}
	cfg.STUN.Enabled = false
	cfg.XMPP = []config.Service{{Name: user, Type: "client", Server: w.srv.C2S.String(),
		JID: user + "@localhost", Password: password, CAFile: w.srv.CAFile}}
	cfg.Directory = dir
	rd := startRelayd(t, w.lan.NS("relay"), cfg)
	online, err := rd.WaitLog(ctx, "xmpp client online", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rd, online.Str("address")
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

// directoryStatusOf runs relayd status against rd's API and returns what
// it says of the directories.
func directoryStatusOf(ctx context.Context, t *testing.T, rd *harness.Relayd) daemon.DirectoryStatus {
	t.Helper()
	if _, err := rd.WaitLog(ctx, "provisioning API listening", 1, nil); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, relaydBin, "-api-socket", rd.APISocket, "status").Output()
	var st struct{ Directory *daemon.DirectoryStatus }
	if err != nil || json.Unmarshal(out, &st) != nil || st.Directory == nil {
		t.Fatalf("relayd status: %v\n%s", err, out)
	}
	return *st.Directory
}

// TestDirectoryOnProsody: relay A (the component relay.localhost) and
// relay C (the account relayc@localhost) publish their items to a node
// of Prosody's publish-subscribe service; relay B (tracker@localhost)
// subscribes to it, health-checks both and lists them in its <services/>
// answer to a client; relayd status says so on each. A stops cleanly: its item goes (Prosody lets a publisher of an
// open node publish, not retract: A marks it stopped) and B stops
// listing it, while C stays.
func TestDirectoryOnProsody(t *testing.T) {
	testDirectory(t, harness.StartProsody, true)
}

// TestDirectoryOnEjabberd is TestDirectoryOnProsody on ejabberd's
// mod_pubsub. Local users may create nodes there, but the provider
// creates it all the same: a relay's first publish would auto-create it
// with the server's defaults (publish model "publishers"), shutting the
// other relays out (docs/directory.md).
func TestDirectoryOnEjabberd(t *testing.T) {
	testDirectory(t, harness.StartEjabberd, true)
}

func testDirectory(t *testing.T, start func(context.Context, harness.ServerOptions) (*harness.XMPPServer, error), createNode bool) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jnd", "relay")
	srv, err := start(ctx, harness.ServerOptions{Netns: lan.NS("relay"), Admins: []string{"diradmin"},
		Users: map[string]string{user: password, "tracker": "trackerpw", "relayc": "relaycpw", "diradmin": "diradminpw"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s logs:\n%s", srv.Kind, srv.Logs())
		}
		srv.Close()
	})
	if createNode {
		createDirectoryNode(ctx, t, srv, "diradmin", "diradminpw")
	}
	w := &world{lan: lan, srv: srv, req: srv.Requester(user, password)}
	dir := []config.DirectoryNode{{Service: srv.PubsubDomain, Node: directoryNode}}

	cfgA := w.relayConfig()
	cfgA.STUN.Enabled = false // the three relays share a namespace: no STUN listing to fight over
	cfgA.Directory = config.Directory{Publish: dir, RefreshSeconds: 60, Country: "DE"}
	relayA := w.startRelay(ctx, t, cfgA)

	relayC, addrC := startAccountRelay(ctx, t, w, 40300, "relayc", "relaycpw",
		config.Directory{Publish: dir, RefreshSeconds: 60})

	for _, rd := range []*harness.Relayd{relayA, relayC} {
		if _, err := rd.WaitLog(ctx, "directory: published", 1, nil); err != nil {
			t.Fatal(err)
		}
	}

	relayB, addrB := startAccountRelay(ctx, t, w, 40200, "tracker", "trackerpw",
		config.Directory{Subscribe: dir, RefreshSeconds: 60})
	for _, relay := range []string{srv.ComponentDomain, addrC} {
		if _, err := relayB.WaitLog(ctx, "directory: relay learned", 1, func(r harness.LogRecord) bool {
			return r.Str("relay") == relay && r.Str("trust") == "verified"
		}); err != nil {
			t.Fatal(err)
		}
	}
	// B health-checks both (no other tracker shares the work).
	for _, relay := range []string{srv.ComponentDomain, addrC} {
		if _, err := relayB.WaitLog(ctx, "directory: relay probed", 1, func(r harness.LogRecord) bool { return r.Str("relay") == relay }); err != nil {
			t.Fatal(err)
		}
	}
	// relayd status: A and C say where they published and as what; B
	// how many relays the directory gave and that it lists both.
	for rd, addr := range map[*harness.Relayd]string{relayA: srv.ComponentDomain, relayC: addrC} {
		st := directoryStatusOf(ctx, t, rd)
		if len(st.Publish) != 1 || st.Publish[0].Node != srv.PubsubDomain+"/"+directoryNode || st.Publish[0].State != directory.StatePublished ||
			st.Publish[0].Address != addr || st.Publish[0].LastPublished.IsZero() || st.Publish[0].Error != "" || st.Subscribe != nil {
			t.Errorf("status of %s: %+v", addr, st)
		}
	}
	stB := directoryStatusOf(ctx, t, relayB)
	if len(stB.Publish) != 0 || len(stB.Subscribe) != 1 || stB.Subscribe[0].Relays != 2 || stB.Subscribe[0].SubscribedAs != addrB ||
		stB.Subscribe[0].LastFetch.IsZero() || stB.Subscribe[0].Error != "" || stB.ReaderTotals == nil {
		t.Errorf("status of B: %+v", stB)
	} else if got := *stB.ReaderTotals; got != (directory.ReaderTotals{Relays: 2, Listed: 2, ProbeShare: 2}) {
		t.Errorf("B's totals %+v", got)
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
	// B stops cleanly: its subscription ends (its next session has
	// another resource).
	if err := relayB.Stop(); err != nil {
		t.Fatal(err)
	}
	if n := relayB.Count("directory: unsubscribed", func(r harness.LogRecord) bool { return r.Str("address") == addrB }); n != 1 {
		t.Errorf("B unsubscribed %d times at its stop, want 1", n)
	}
}

// TestDirectoryMirrorOnProsody: the directory is mirrored on two Prosody
// servers (node relays-1 on the first, relays-2 on the second). Relay A
// is the component relay.localhost on both and publishes to each; relay
// B has an account on each and reads each. The first server is killed:
// a client of the second still gets A from B's <services/>, and B
// forgets nothing. The first server comes back: its node still holds A's
// item (persistent items), which B fetches again.
func TestDirectoryMirrorOnProsody(t *testing.T) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jnm", "relay")
	users := map[string]string{user: password, "tracker": "trackerpw", "diradmin": "diradminpw"}
	var srvs [2]*harness.XMPPServer
	for i := range srvs {
		srv, err := harness.StartProsody(ctx, harness.ServerOptions{Netns: lan.NS("relay"), Admins: []string{"diradmin"}, Users: users})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("prosody %d logs:\n%s", i+1, srv.Logs())
			}
			srv.Close()
		})
		srvs[i] = srv
	}
	nodes := []string{"relays-1", "relays-2"}
	for i, srv := range srvs {
		outs, err := srv.Requester("diradmin", "diradminpw").Run(ctx, harness.RequestArgs{Relay: srv.PubsubDomain, Set: true,
			Raw: directory.CreateNodeXML(nodes[i])})
		if err != nil || len(outs) != 1 || outs[0].Type != "result" {
			t.Fatalf("create node %s: %+v %v", nodes[i], outs, err)
		}
	}
	w := &world{lan: lan, srv: srvs[0]}

	cfgA := w.relayConfig()
	cfgA.STUN.Enabled = false
	cfgB := w.relayConfig()
	cfgB.STUN.Enabled = false
	cfgB.Ports = config.PortRange{Min: 40200, Max: 40299}
	cfgA.XMPP, cfgB.XMPP = nil, nil
	for i, srv := range srvs {
		a, b := fmt.Sprintf("a%d", i+1), fmt.Sprintf("b%d", i+1)
		cfgA.XMPP = append(cfgA.XMPP, config.Service{Name: a, Type: "component", Server: srv.Component.String(),
			Domain: srv.ComponentDomain, Secret: srv.Secret})
		cfgA.Directory.Publish = append(cfgA.Directory.Publish, config.DirectoryNode{Service: srv.PubsubDomain, Node: nodes[i], Session: a})
		cfgB.XMPP = append(cfgB.XMPP, config.Service{Name: b, Type: "client", Server: srv.C2S.String(),
			JID: "tracker@localhost", Password: "trackerpw", CAFile: srv.CAFile})
		cfgB.Directory.Subscribe = append(cfgB.Directory.Subscribe, config.DirectoryNode{Service: srv.PubsubDomain, Node: nodes[i], Session: b})
	}
	cfgA.Directory.RefreshSeconds, cfgB.Directory.RefreshSeconds = 60, 60
	relayA := startRelayd(t, lan.NS("relay"), cfgA)
	if _, err := relayA.WaitLog(ctx, "directory: published", 2, nil); err != nil {
		t.Fatal(err)
	}
	relayB := startRelayd(t, lan.NS("relay"), cfgB)
	online, err := relayB.WaitLog(ctx, "xmpp client online", 1, func(r harness.LogRecord) bool { return r.Str("session") == "b2" })
	if err != nil {
		t.Fatal(err)
	}
	addrB2 := online.Str("address")
	fetched := func(node string, n int) {
		t.Helper()
		if _, err := relayB.WaitLog(ctx, "directory: fetched", n, func(r harness.LogRecord) bool {
			return r.Str("node") == srvs[0].PubsubDomain+"/"+node && r["accepted"] == float64(1)
		}); err != nil {
			t.Fatalf("B never fetched A's item from %s (time %d): %v", node, n, err)
		}
	}
	fetched(nodes[0], 1)
	fetched(nodes[1], 1)
	req := srvs[1].Requester(user, password)
	w.req = req
	want := "relay public " + srvs[1].ComponentDomain
	if listed := servicesOf(ctx, t, w, addrB2); !slices.Contains(listed, want) {
		t.Fatalf("B's services %q, want %q among them", listed, want)
	}

	// The first server dies.
	if err := srvs[0].Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := relayB.WaitLog(ctx, "xmpp session lost, reconnecting", 1, func(r harness.LogRecord) bool { return r.Str("session") == "b1" }); err != nil {
		t.Fatal(err)
	}
	if listed := servicesOf(ctx, t, w, addrB2); !slices.Contains(listed, want) {
		t.Errorf("with the first server dead, B's services %q, want %q among them", listed, want)
	}
	// It comes back with its items.
	if err := srvs[0].Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := relayB.WaitLog(ctx, "xmpp client online", 2, func(r harness.LogRecord) bool { return r.Str("session") == "b1" }); err != nil {
		t.Fatal(err)
	}
	fetched(nodes[0], 2)
	if n := relayB.Count("directory: relay forgotten", nil); n != 0 {
		t.Errorf("B forgot %d relays", n)
	}
	if listed := servicesOf(ctx, t, w, addrB2); !slices.Contains(listed, want) {
		t.Errorf("after the restart, B's services %q, want %q among them", listed, want)
	}
}
