package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/tests/harness"
)

// TestHostileStanzasThroughServers sends relayd, through real Prosody and
// ejabberd from an ordinary client account, the worst channel requests a
// server forwards: deep nesting, an attribute bomb, a large text payload
// just under the server's stanza limit, and one over it. relayd answers
// what reaches it with bad-request, keeps its memory bounded, and the next
// honest request is granted.
func TestHostileStanzasThroughServers(t *testing.T) {
	harness.RequireRoot(t)
	for _, kind := range []string{"prosody", "ejabberd"} {
		t.Run(kind, func(t *testing.T) { hostileThrough(t, kind) })
	}
}

func hostileThrough(t *testing.T, kind string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jh"+kind[:1], "relay")
	users := map[string]string{user: password, "mallory": "mallorypw"}
	srv := startServer(ctx, t, kind, lan.NS("relay"), users)
	w := &world{lan: lan, srv: srv, req: srv.Requester(user, password)}
	rd := w.startRelay(ctx, t, w.relayConfig())
	rssBefore, _ := harness.ProcMem(rd.PID())

	const open = `<channel xmlns='http://jabber.org/protocol/jinglenodes#channel' protocol='udp'>`
	const closing = `</channel>`
	var attrs strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&attrs, " a%d='x'", i)
	}
	mallory := srv.Requester("mallory", users["mallory"])
	for _, h := range []struct {
		name, payload string
	}{
		// 200 levels: deep for a request (relayd takes 16), shallow enough
		// for the requester library's recursive serialiser.
		{"nested", open + strings.Repeat("<a>", 200) + strings.Repeat("</a>", 200) + closing},
		{"attributes", open + "<b" + attrs.String() + "/>" + closing},
		{"text", open + "<c>" + strings.Repeat("x", 200<<10) + "</c>" + closing}, // under both servers' 256 KiB
	} {
		outs, err := mallory.Run(ctx, harness.RequestArgs{Raw: h.payload, IQTimeout: 20 * time.Second})
		if err != nil || len(outs) != 1 {
			t.Fatalf("%s (%d bytes): %+v %v", h.name, len(h.payload), outs, err)
		}
		if o := outs[0]; o.Type != "error" || o.Condition != "bad-request" {
			t.Errorf("%s (%d bytes): answered %+v, want bad-request", h.name, len(h.payload), o)
		}
	}
	// Over the server's stanza limit: the server ends mallory's stream; the
	// stanza never reaches relayd.
	over := open + "<c>" + strings.Repeat("x", 300<<10) + "</c>" + closing
	overOuts, overErr := mallory.Run(ctx, harness.RequestArgs{Raw: over, IQTimeout: 10 * time.Second})
	for _, o := range overOuts {
		if o.Type == "result" || o.Type == "error" {
			t.Errorf("a %d-byte request, over the server's stanza limit, was answered: %+v", len(over), o)
		}
	}
	rssAfter, peak := harness.ProcMem(rd.PID())
	t.Logf("%s: the request over the stanza limit ended as %+v (%v); relayd RSS %d kB before, %d kB after, peak %d kB",
		kind, overOuts, overErr, rssBefore, rssAfter, peak)

	outs, err := w.req.Run(ctx, harness.RequestArgs{})
	if err != nil || len(outs) != 1 || outs[0].Type != "result" {
		t.Fatalf("honest request after the hostile ones: %+v %v", outs, err)
	}
	if rd.Exited() {
		t.Fatal("relayd exited")
	}
	// The largest stanza a server forwards is 256 KiB; relayd holds at most
	// a few copies of it while decoding.
	if peak-rssBefore > 16<<10 {
		t.Errorf("relayd's peak RSS grew by %d kB for stanzas of at most 256 KiB", peak-rssBefore)
	}
}
