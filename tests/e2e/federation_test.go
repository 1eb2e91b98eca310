package e2e

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// TestFederation runs one relayd registered at the same time as a
// component of Prosody and as client accounts on ejabberd (one public, one
// for its owner's contacts only), and checks that each path grants working
// channels, that either server can die without disturbing the other or any
// call, and that clients find the relay by themselves.
func TestFederation(t *testing.T) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jnf", "relay", "caller", "callee")
	users := map[string]string{user: password, "relay": "relaypw", "donor": "donorpw", "bob": "bobpw"}
	prosody, err := harness.StartProsody(ctx, harness.ServerOptions{Netns: lan.NS("relay"), Users: map[string]string{user: password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prosody.Close() })
	ejabberd, err := harness.StartEjabberd(ctx, harness.ServerOptions{Netns: lan.NS("relay"), Users: users})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ejabberd.Close() })
	// bob is a contact of the donor's account (subscription both); alice is not.
	if out, err := ejabberd.EjabberdCtl(ctx, "add_rosteritem", "donor", "localhost", "bob", "localhost", "bob", "friends", "both"); err != nil {
		t.Fatalf("add roster item: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("prosody logs:\n%s\nejabberd logs:\n%s", prosody.Logs(), ejabberd.Logs())
		}
	})

	cfg := config.Default()
	cfg.PublicAddress = lan.Addr("relay").String()
	cfg.Ports = config.PortRange{Min: 40000, Max: 40099}
	cfg.Limits.MaxChannelsPerDomain = -1 // every requester is of localhost: the domain share is not what this test is about
	cfg.Reconnect = config.Reconnect{MinSeconds: 0.2, MaxSeconds: 1}
	cfg.XMPP = []config.Service{
		{Name: "prosody-component", Type: "component", Server: prosody.Component.String(), Domain: prosody.ComponentDomain, Secret: prosody.Secret},
		{Name: "ejabberd-public", Type: "client", Server: ejabberd.C2S.String(), JID: "relay@localhost", Password: "relaypw", CAFile: ejabberd.CAFile},
		{Name: "ejabberd-donor", Type: "client", Server: ejabberd.C2S.String(), JID: "donor@localhost", Password: "donorpw", CAFile: ejabberd.CAFile, Policy: "roster"},
	}
	rd := startRelayd(t, lan.NS("relay"), cfg)
	// clientAddr waits for the n-th login of a client session and returns
	// the full JID it was bound to: what requesters address.
	clientAddr := func(session string, n int) string {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		rec, err := rd.WaitLog(wctx, "xmpp client online", n, func(r harness.LogRecord) bool { return r.Str("session") == session })
		if err != nil {
			t.Fatal(err)
		}
		return rec.Str("address")
	}
	if _, err := rd.WaitLog(ctx, "xmpp component online", 1, nil); err != nil {
		t.Fatal(err)
	}
	publicJID := clientAddr("ejabberd-public", 1)
	donorJID := clientAddr("ejabberd-donor", 1)

	w := &world{lan: lan}
	viaProsody := prosody.Requester(user, password)
	viaEjabberd := ejabberd.Requester(user, password)
	request := func(r harness.Requester, relay string) harness.Outcome {
		t.Helper()
		outs, err := r.Run(ctx, harness.RequestArgs{Relay: relay})
		if err != nil {
			t.Fatal(err)
		}
		if len(outs) != 1 {
			t.Fatalf("request to %s: %+v", relay, outs)
		}
		return outs[0]
	}
	call := func(r harness.Requester, relay string) *call {
		t.Helper()
		res := request(r, relay)
		if res.Type != "result" {
			t.Fatalf("channel from %s: %+v", relay, res)
		}
		c := w.setUpCall(ctx, t, res)
		c.exchange(ctx, t, 50)
		return c
	}

	c1 := call(viaProsody, prosody.ComponentDomain)
	c2 := call(viaEjabberd, publicJID)

	// Roster policy: alice is no contact of the donor, bob is.
	if res := request(viaEjabberd, donorJID); res.Type != "error" || res.Condition != "forbidden" {
		t.Errorf("non-contact at the roster relay: %+v, want forbidden", res)
	}
	if res := request(ejabberd.Requester("bob", "bobpw"), donorJID); res.Type != "result" {
		t.Errorf("contact at the roster relay: %+v, want a channel", res)
	}

	// Jitsi-style discovery through Prosody: disco#items of the user's
	// domain, services of each item, then a channel from the relay found.
	if disco, err := viaProsody.Run(ctx, harness.RequestArgs{Relay: harness.ServerDomain, Raw: `<query xmlns='http://jabber.org/protocol/disco#items'/>`}); err != nil || len(disco) != 1 {
		t.Fatalf("disco#items: %+v %v", disco, err)
	} else {
		found := ""
		for _, m := range regexp.MustCompile(`jid="([^"]+)"`).FindAllStringSubmatch(disco[0].Payload, -1) {
			svc, err := viaProsody.Run(ctx, harness.RequestArgs{Relay: m[1], Raw: `<services xmlns='http://jabber.org/protocol/jinglenodes'/>`})
			if err != nil || len(svc) != 1 || svc[0].Type != "result" {
				continue
			}
			if addr := regexp.MustCompile(`<relay[^>]*address="([^"]+)"`).FindStringSubmatch(svc[0].Payload); addr != nil {
				found = addr[1]
				break
			}
		}
		if found != prosody.ComponentDomain {
			t.Fatalf("discovery found relay %q in %s", found, disco[0].Payload)
		}
		if res := request(viaProsody, found); res.Type != "result" {
			t.Fatalf("channel from the discovered relay: %+v", res)
		}
	}

	// Prosody dies: both calls keep flowing, ejabberd keeps granting.
	if err := prosody.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.WaitLog(ctx, "xmpp session lost, reconnecting", 1, func(r harness.LogRecord) bool { return r.Str("session") == "prosody-component" }); err != nil {
		t.Fatal(err)
	}
	c1.exchange(ctx, t, 50)
	c2.exchange(ctx, t, 50)
	call(viaEjabberd, publicJID).checkClean(t)
	if err := prosody.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.WaitLog(ctx, "xmpp component online", 2, nil); err != nil {
		t.Fatal(err)
	}
	call(viaProsody, prosody.ComponentDomain).checkClean(t)

	// ejabberd dies: the same the other way round.
	if err := ejabberd.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.WaitLog(ctx, "xmpp session lost, reconnecting", 1, func(r harness.LogRecord) bool { return r.Str("session") == "ejabberd-public" }); err != nil {
		t.Fatal(err)
	}
	c1.exchange(ctx, t, 50)
	c2.exchange(ctx, t, 50)
	call(viaProsody, prosody.ComponentDomain).checkClean(t)
	if err := ejabberd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	publicJID = clientAddr("ejabberd-public", 2)
	call(viaEjabberd, publicJID).checkClean(t)
	c1.checkClean(t)
	c2.checkClean(t)
}
