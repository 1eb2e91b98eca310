package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/tests/harness"
)

// TestAddressChangeFollowed runs relayd without public_address: it
// advertises its interface address, and when that address changes (a new
// DHCP lease, a PPP reconnect) the next channel result carries the new one.
func TestAddressChangeFollowed(t *testing.T) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jna", "relay", "peer")
	srv, err := harness.StartProsody(ctx, harness.ServerOptions{Netns: lan.NS("relay"), Users: map[string]string{user: password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	w := &world{lan: lan, srv: srv, req: srv.Requester(user, password)}
	cfg := w.relayConfig()
	cfg.PublicAddress = ""
	rd := w.startRelay(ctx, t, cfg)

	if got := w.requestChannel(ctx, t).Channel["host"]; got != lan.Addr("relay").String() {
		t.Fatalf("host %s, want the interface address %s", got, lan.Addr("relay"))
	}
	const renumbered = "198.51.100.77" // a new lease in another network
	for _, args := range [][]string{
		{"addr", "add", renumbered + "/24", "dev", "br0"},
		{"addr", "del", lan.Addr("relay").String() + "/24", "dev", "br0"},
	} {
		if out, err := lan.Command(ctx, "relay", "ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if _, err := rd.WaitLog(wctx, "public address changed", 1, func(r harness.LogRecord) bool { return r.Str("to") == renumbered }); err != nil {
		t.Fatal(err)
	}
	if got := w.requestChannel(ctx, t).Channel["host"]; got != renumbered {
		t.Fatalf("host after renumbering %s, want %s", got, renumbered)
	}
}

// TestStartsBeforeTheNetwork starts relayd on a host with no usable
// address yet (a router booting, DHCP pending): it starts anyway and
// refuses channels with service-unavailable, then serves them from the
// first address the interface gets.
func TestStartsBeforeTheNetwork(t *testing.T) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jnb", "relay", "peer")
	srv, err := harness.StartProsody(ctx, harness.ServerOptions{Netns: lan.NS("relay"), Users: map[string]string{user: password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ip := func(args ...string) {
		t.Helper()
		if out, err := lan.Command(ctx, "relay", "ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("addr", "del", lan.Addr("relay").String()+"/24", "dev", "br0") // only loopback left
	w := &world{lan: lan, srv: srv, req: srv.Requester(user, password)}
	cfg := w.relayConfig()
	cfg.PublicAddress = ""
	rd := w.startRelay(ctx, t, cfg)
	if _, err := rd.WaitLog(ctx, "no usable address yet", 1, nil); err != nil {
		t.Fatal(err)
	}
	outs, err := w.req.Run(ctx, harness.RequestArgs{})
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 1 || outs[0].Type != "error" || outs[0].Condition != "service-unavailable" {
		t.Fatalf("request without an address: %+v, want error service-unavailable", outs)
	}

	ip("addr", "add", lan.Addr("relay").String()+"/24", "dev", "br0") // the lease arrives
	if _, err := rd.WaitLog(ctx, "public address changed", 1, func(r harness.LogRecord) bool { return r.Str("to") == lan.Addr("relay").String() }); err != nil {
		t.Fatal(err)
	}
	if got := w.requestChannel(ctx, t).Channel["host"]; got != lan.Addr("relay").String() {
		t.Fatalf("host %s, want %s", got, lan.Addr("relay"))
	}
}
