package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/tests/harness"
)

// TestRefusalEchoesTheRequestThroughProsody: a refused channel request's
// error, as Prosody delivers it to a third-party client, carries the
// request's <channel/> (or <candidate/>) in the #channel namespace before
// the <error/>, which is what Jitsi-family clients need to read a refusal
// as "no relay"; the error itself is the refusal's own. An error to
// another kind of request carries the <error/> alone.
func TestRefusalEchoesTheRequestThroughProsody(t *testing.T) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jnj", "relay")
	users := map[string]string{user: password, "bob": "bobpw"}
	srv := startServer(ctx, t, "prosody", lan.NS("relay"), users)
	w := &world{lan: lan, srv: srv, req: srv.Requester(user, password)}
	cfg := w.relayConfig()
	cfg.Limits.MaxChannels = 1
	cfg.Channel.ExpireSeconds = 600 // alice's channel holds the only slot all along
	w.startRelay(ctx, t, cfg)
	if o := w.requestChannel(ctx, t); o.Type != "result" {
		t.Fatalf("first channel: %+v", o)
	}

	bob := srv.Requester("bob", users["bob"])
	for _, c := range []struct {
		name           string
		args           harness.RequestArgs
		errType, cond  string
		element, proto string // the echo; "" = none
	}{
		{"relay full", harness.RequestArgs{}, "wait", "resource-constraint", "channel", "udp"},
		{"tcp, legacy form", harness.RequestArgs{Protocol: "tcp", Legacy: true}, "cancel", "feature-not-implemented", "candidate", "tcp"},
		{"malformed protocol", harness.RequestArgs{Raw: `<channel xmlns='http://jabber.org/protocol/jinglenodes#channel' protocol='carrier-pigeon'/>`},
			"modify", "bad-request", "channel", "carrier-pigeon"},
		{"not a channel request", harness.RequestArgs{Raw: `<query xmlns='jabber:iq:version'/>`}, "cancel", "service-unavailable", "", ""},
	} {
		outs, err := bob.Run(ctx, c.args)
		if err != nil || len(outs) != 1 {
			t.Fatalf("%s: %+v %v", c.name, outs, err)
		}
		o := outs[0]
		if o.Type != "error" || o.ErrorType != c.errType || o.Condition != c.cond {
			t.Errorf("%s: %+v, want error %s/%s", c.name, o, c.errType, c.cond)
			continue
		}
		wantChildren, wantAttrs := "[error]", "map[]"
		if c.element != "" {
			wantChildren, wantAttrs = "["+c.element+" error]", "map[protocol:"+c.proto+"]"
		}
		if got := fmt.Sprint(o.Children); got != wantChildren {
			t.Errorf("%s: the error IQ's children %s, want %s", c.name, got, wantChildren)
		}
		if o.Element != c.element || fmt.Sprint(o.Channel) != wantAttrs {
			t.Errorf("%s: echoed <%s/> %v, want <%s/> %s", c.name, o.Element, o.Channel, c.element, wantAttrs)
		}
	}
}
