package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// TestMonthlyQuota gives the relay a 1 MB monthly quota and a call that
// relays more than that: once it is used up, new requests are refused with
// resource-constraint saying so, the call in progress goes on, and after a
// clean restart from the same state directory the quota is still used up.
func TestMonthlyQuota(t *testing.T) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jnq", "relay", "caller", "callee")
	srv, err := harness.StartProsody(ctx, harness.ServerOptions{Netns: lan.NS("relay"), Users: map[string]string{user: password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	w := &world{lan: lan, srv: srv, req: srv.Requester(user, password)}
	cfg := w.relayConfig()
	cfg.Limits.MonthlyQuotaMB = 1
	state := t.TempDir()
	rd := w.startRelayIn(ctx, t, state, cfg)
	c := w.setUpCall(ctx, t, w.requestChannel(ctx, t))

	relayMB(ctx, t, c, 600) // 1.2 MB through the relay
	if _, err := rd.WaitLog(ctx, "quota used up: new channels are refused, calls in progress go on", 1, nil); err != nil {
		t.Fatal(err)
	}
	refused := func(when string) {
		t.Helper()
		outs, err := w.req.Run(ctx, harness.RequestArgs{})
		if err != nil {
			t.Fatal(err)
		}
		if len(outs) != 1 || outs[0].Type != "error" || outs[0].Condition != "resource-constraint" || outs[0].ErrorType != "wait" ||
			!strings.Contains(outs[0].Text, "monthly quota of 1 MB is used up") {
			t.Fatalf("request %s: %+v, want a wait/resource-constraint naming the monthly quota", when, outs)
		}
	}
	refused("over the quota")
	c.exchange(ctx, t, 20) // the call in progress is not cut
	c.checkClean(t)

	// A clean stop saves the counts; the next start still refuses.
	if err := rd.Stop(); err != nil {
		t.Fatal(err)
	}
	w.startRelayIn(ctx, t, state, nil)
	refused("after a restart")
}

// TestRequesterAndChannelLimits: one channel per requester, two for the
// whole relay. A requester's second request gets policy-violation, a
// second requester gets its channel, a third gets resource-constraint.
func TestRequesterAndChannelLimits(t *testing.T) {
	ask := limitedRelay(t, "jnl", func(l *config.Limits) { l.PerJIDChannels, l.MaxChannels = 1, 2 })
	if o := ask(user); o.Type != "result" {
		t.Fatalf("first channel: %+v", o)
	}
	if o := ask(user); o.Type != "error" || o.Condition != "policy-violation" || !strings.Contains(o.Text, "already holds 1 channels") {
		t.Fatalf("second channel for one requester: %+v", o)
	}
	if o := ask("bob"); o.Type != "result" {
		t.Fatalf("another requester: %+v", o)
	}
	if o := ask("carol"); o.Type != "error" || o.Condition != "resource-constraint" || !strings.Contains(o.Text, "maximum of 2 calls") {
		t.Fatalf("over max_channels: %+v", o)
	}
}

// TestDomainShare: two channels for the requesters of one domain
// (limits.max_channels_per_domain), one per requester, five for the
// relay. Two users of localhost get theirs, a third gets policy-violation
// naming the domain, and a first requester's second request the per-JID
// refusal.
func TestDomainShare(t *testing.T) {
	ask := limitedRelay(t, "jnd", func(l *config.Limits) {
		l.PerJIDChannels, l.MaxChannels, l.MaxChannelsPerDomain = 1, 5, 2
	})
	for _, u := range []string{user, "bob"} {
		if o := ask(u); o.Type != "result" {
			t.Fatalf("%s, within the domain's share: %+v", u, o)
		}
	}
	want := "requesters of localhost already hold 2 channels"
	if o := ask("carol"); o.Type != "error" || o.Condition != "policy-violation" || o.ErrorType != "wait" || !strings.Contains(o.Text, want) {
		t.Fatalf("over the domain's share: %+v, want wait/policy-violation %q", o, want)
	}
	if o := ask(user); o.Type != "error" || o.Condition != "policy-violation" || !strings.Contains(o.Text, "already holds 1 channels") {
		t.Fatalf("second channel for one requester: %+v", o)
	}
}

// limitedRelay starts Prosody with three users of localhost and relayd
// with the limits set, and returns a function that asks for one channel
// as one of them.
func limitedRelay(t *testing.T, prefix string, set func(*config.Limits)) (ask func(user string) harness.Outcome) {
	t.Helper()
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	lan := harness.NewLAN(t, prefix, "relay")
	users := map[string]string{user: password, "bob": "bobpw", "carol": "carolpw"}
	srv, err := harness.StartProsody(ctx, harness.ServerOptions{Netns: lan.NS("relay"), Users: users})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if srv.Domain != "localhost" {
		t.Fatalf("users of %s, want localhost", srv.Domain)
	}
	w := &world{lan: lan, srv: srv, req: srv.Requester(user, password)}
	cfg := w.relayConfig()
	set(&cfg.Limits)
	w.startRelay(ctx, t, cfg)
	return func(u string) harness.Outcome {
		t.Helper()
		outs, err := srv.Requester(u, users[u]).Run(ctx, harness.RequestArgs{})
		if err != nil || len(outs) != 1 {
			t.Fatalf("%s: %+v %v", u, outs, err)
		}
		return outs[0]
	}
}

// relayMB sends n RTP packets of 1000 bytes each way through c and waits
// until all arrived (2·n kB relayed).
func relayMB(ctx context.Context, t *testing.T, c *call, n int) {
	t.Helper()
	before := [2]int{c.callee.RTPStats().Sources["caller"].Packets, c.caller.RTPStats().Sources["callee"].Packets}
	pace := harness.Pace{Count: n, Interval: 500 * time.Microsecond, Size: 1000}
	errs := make(chan error, 2)
	go func() { _, err := c.caller.SendRTP(ctx, c.local, pace); errs <- err }()
	go func() { _, err := c.callee.SendRTP(ctx, c.remote, pace); errs <- err }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	c.sent[0] += n
	c.sent[2] += n
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := c.callee.WaitRTP(wctx, "caller", before[0]+n); err != nil {
		t.Fatal(err)
	}
	if err := c.caller.WaitRTP(wctx, "callee", before[1]+n); err != nil {
		t.Fatal(err)
	}
}

// TestUsageSurvivesSIGKILL: the usage counts are saved every
// limits.usage_save_seconds (10 s here), so a SIGKILL forgets at most
// what was relayed since the last save. A used-up quota saved before the
// kill is still used up after it; traffic relayed after the last save is
// what the kill loses, and nothing more.
func TestUsageSurvivesSIGKILL(t *testing.T) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jnk", "relay", "caller", "callee")
	srv, err := harness.StartProsody(ctx, harness.ServerOptions{Netns: lan.NS("relay"), Users: map[string]string{user: password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	w := &world{lan: lan, srv: srv, req: srv.Requester(user, password)}
	cfg := w.relayConfig()
	cfg.Limits.MonthlyQuotaMB, cfg.Limits.UsageSaveSeconds = 1, 10
	dir := t.TempDir()
	monthBytes := func(rd *harness.Relayd) uint64 {
		t.Helper()
		st, err := rd.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.Usage.MonthBytes
	}

	rd := w.startRelayIn(ctx, t, dir, cfg)
	relayMB(ctx, t, w.setUpCall(ctx, t, w.requestChannel(ctx, t)), 600) // 1.2 MB: over the quota
	saved, err := rd.WaitLog(ctx, "usage counts saved", 1, func(r harness.LogRecord) bool { return r.Int("month_bytes") >= 1_000_000 })
	if err != nil {
		t.Fatal(err)
	}
	if err := rd.Kill(); err != nil {
		t.Fatal(err)
	}
	rd = w.startRelayIn(ctx, t, dir, nil)
	if got := monthBytes(rd); got != uint64(saved.Int("month_bytes")) {
		t.Fatalf("after the kill: %d bytes this month, saved %d", got, saved.Int("month_bytes"))
	}
	outs, err := w.req.Run(ctx, harness.RequestArgs{})
	if err != nil || len(outs) != 1 || outs[0].Condition != "resource-constraint" || !strings.Contains(outs[0].Text, "monthly quota") {
		t.Fatalf("request after the kill: %+v %v, want the quota still used up", outs, err)
	}

	// Traffic after the last save is what a kill forgets: the counts come
	// back exactly as saved (a relay over quota still relays its calls;
	// this one is granted under a lifted quota).
	lifted := cfg
	lifted.Limits.MonthlyQuotaMB = 0
	if err := rd.Kill(); err != nil {
		t.Fatal(err)
	}
	rd = w.startRelayIn(ctx, t, dir, lifted)
	before := monthBytes(rd)
	relayMB(ctx, t, w.setUpCall(ctx, t, w.requestChannel(ctx, t)), 100)
	if err := rd.Kill(); err != nil { // within 10 s of the start: no save since
		t.Fatal(err)
	}
	rd = w.startRelayIn(ctx, t, dir, nil)
	if got := monthBytes(rd); got != before {
		t.Fatalf("after a kill within the save interval: %d bytes, want the %d saved before it (the window's traffic forgotten, nothing else)", got, before)
	}
}
