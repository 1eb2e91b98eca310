package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/kernel"
	"github.com/jnrelay/jnrelay/tests/harness"
)

const (
	user, password = "alice", "alicepw"
	// media is the number of RTP and of RTCP packets each party sends in
	// a call phase.
	media         = 200
	mediaInterval = 2 * time.Millisecond
)

// TestRelay runs the whole suite against each XMPP server, relaying in
// userspace with a socket per port, and against Prosody once more with
// each in-kernel fast path (channel.fast_path "nftables", and "ebpf" with
// channel.sockets at its default, auto, which steers the ports where the
// test runs as root) and with steered ports in userspace: the same calls,
// attacks, expiries, reloads and drains must behave the same when the
// kernel forwards. The fast-path runs are for one server only: what
// differs is below the component session, and it keeps the suite's time
// in check.
func TestRelay(t *testing.T) {
	harness.RequireRoot(t)
	for _, kind := range []string{"prosody", "ejabberd"} {
		modes := []string{"userspace"}
		if kind == "prosody" {
			modes = append(modes, "fastpath", "ebpf", "steered")
		}
		t.Run(kind, func(t *testing.T) { relaySuite(t, kind, modes) })
	}
}

// startServer starts kind ("prosody" or "ejabberd") in netns with users;
// it stops at cleanup and its logs are shown if the test failed.
func startServer(ctx context.Context, t *testing.T, kind, netns string, users map[string]string) *harness.XMPPServer {
	t.Helper()
	start := harness.StartProsody
	if kind == "ejabberd" {
		start = harness.StartEjabberd
	}
	srv, err := start(ctx, harness.ServerOptions{Netns: netns, Users: users})
	if err != nil {
		t.Fatalf("start %s: %v", kind, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s logs:\n%s", kind, srv.Logs())
		}
		srv.Close()
	})
	return srv
}

// world is one suite's network and XMPP server: a "public" relay host
// (203.0.113.1) running the server on its loopback, a caller, a callee and
// an attacker host on the same segment.
type world struct {
	lan *harness.LAN
	srv *harness.XMPPServer
	req harness.Requester
	// fastPath runs relayd with this channel.fast_path, "nftables" or
	// "ebpf" (and forwarding on in its namespace, which both need); ""
	// with it off.
	fastPath string
	// steered runs relayd with channel.sockets "steered": one socket per
	// worker for the whole port range (BPF sk_lookup), a raw socket to send.
	steered bool
	// sockets, when set, is channel.sockets (TestSocketsAuto: "auto").
	sockets config.Sockets
	rd      *harness.Relayd // the relayd started last
	// broker, when set, holds the fast path (TestOffloadBroker): relayd
	// runs brokerBin as an unprivileged user without capabilities.
	broker    *brokerProc
	brokerBin string
}

func relaySuite(t *testing.T, kind string, modes []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jn"+kind[:1], "relay", "caller", "callee", "evil")
	srv := startServer(ctx, t, kind, lan.NS("relay"), map[string]string{user: password})
	for _, mode := range modes {
		w := &world{lan: lan, srv: srv, req: srv.Requester(user, password), steered: mode == "steered"}
		switch mode {
		case "userspace":
			w.sockets = config.SocketsPerPort
		case "fastpath":
			w.fastPath = "nftables"
		case "ebpf":
			w.fastPath = "ebpf"
		}
		t.Run(mode, func(t *testing.T) {
			if w.steered {
				if err := kernel.SteeringAvailable(); kernel.SteeringUnsupported(err) {
					t.Skipf("steered ports unavailable on this host (BPF sk_lookup): %v", err)
				}
			}
			if w.fastPath != "" {
				w.forwarding(t, true)
				defer w.forwarding(t, false)
			}
			t.Run("call", w.testCall)
			t.Run("intruder", w.testIntruder)
			t.Run("errors-and-expiry", w.testErrorsAndExpiry)
			t.Run("live-reload", w.testLiveReload)
			t.Run("drain-on-sigterm", w.testDrainOnSIGTERM)
			switch w.fastPath {
			case "nftables":
				t.Run("sigkill-stale-table", w.testStaleTable)
			case "ebpf":
				t.Run("sigkill-detaches", w.testKilledForwarder)
			}
			t.Run("server-killed-mid-call", w.testServerKilledMidCall) // last: restarts the server
		})
	}
}

// forwarding sets net.ipv4.ip_forward in the relay's namespace.
func (w *world) forwarding(t *testing.T, on bool) {
	t.Helper()
	v := "0"
	if on {
		v = "1"
	}
	if out, err := exec.Command("ip", "netns", "exec", w.lan.NS("relay"), "sysctl", "-qw", "net.ipv4.ip_forward="+v).CombinedOutput(); err != nil {
		t.Fatalf("sysctl ip_forward=%s: %v: %s", v, err, out)
	}
	if on {
		w.brNetfilterOff(t)
	}
}

// brNetfilterOff keeps br_netfilter (when the module is loaded) from
// passing the relay's bridge's frames through the IPv4 hooks: the
// nftables fast path refuses to open on a bridge where it does, because
// there a rewritten datagram is bridged rather than routed
// (kernel/nft's CheckBrNetfilter). The sysctl is per network namespace.
func (w *world) brNetfilterOff(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err != nil {
		return
	}
	if out, err := exec.Command("ip", "netns", "exec", w.lan.NS("relay"), "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0").CombinedOutput(); err != nil {
		t.Fatalf("sysctl bridge-nf-call-iptables=0: %v: %s", err, out)
	}
}

// nftTable is `nft list table ip jnrelay` in the relay's namespace, ""
// when there is no such table.
func (w *world) nftTable(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", w.lan.NS("relay"), "nft", "list", "table", "ip", "jnrelay").CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No such file") {
			return ""
		}
		t.Fatalf("nft list table: %v: %s", err, out)
	}
	return string(out)
}

// relayConfig is a configuration for the relay host.
func (w *world) relayConfig() config.Config {
	c := config.Default()
	c.PublicAddress = w.lan.Addr("relay").String()
	c.ListenAddress = "0.0.0.0"
	c.Ports = config.PortRange{Min: 40000, Max: 40099}
	// Every requester is on one domain, and tests ask for more channels
	// than its default share of these 25 (6): TestDomainShare tests it.
	c.Limits.MaxChannelsPerDomain = -1
	c.Reconnect = config.Reconnect{MinSeconds: 0.2, MaxSeconds: 1}
	c.Channel.FastPath = "off"
	if w.fastPath != "" {
		c.Channel.FastPath = config.FastPath(w.fastPath) // relayd refuses to start without it
	}
	if w.steered {
		c.Channel.Sockets = "steered" // relayd refuses to start if it cannot steer
	}
	if w.sockets != "" {
		c.Channel.Sockets = w.sockets
	}
	c.XMPP = []config.Service{{Name: w.srv.Kind, Type: "component", Server: w.srv.Component.String(),
		Domain: w.srv.ComponentDomain, Secret: w.srv.Secret}}
	return c
}

// startRelayd starts relayd in namespace ns with cfg; it is stopped (and
// its logs shown if the test failed) at cleanup.
func startRelayd(t *testing.T, ns string, cfg config.Config) *harness.Relayd {
	t.Helper()
	return startRelaydIn(t, ns, t.TempDir(), cfg)
}

// startRelaydIn is startRelayd with its configuration and state in dir
// (cfg nil: the relayd.json already there) and extra flags.
func startRelaydIn(t *testing.T, ns, dir string, cfg any, extra ...string) *harness.Relayd {
	t.Helper()
	return keepRelayd(t)(harness.StartRelaydArgs(relaydBin, ns, dir, cfg, extra...))
}

// keepRelayd fails t when relayd did not start, else stops it when t
// ends, with its logs when t failed:
// keepRelayd(t)(harness.StartRelayd…(…)).
func keepRelayd(t *testing.T) func(*harness.Relayd, error) *harness.Relayd {
	return func(rd *harness.Relayd, err error) *harness.Relayd {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			rd.Stop()
			if t.Failed() {
				t.Logf("relayd logs:\n%s", rd.Logs())
			}
		})
		return rd
	}
}

// startRelay starts relayd in the relay namespace and waits until it is
// registered with the server.
func (w *world) startRelay(ctx context.Context, t *testing.T, cfg config.Config) *harness.Relayd {
	t.Helper()
	var rd *harness.Relayd
	if w.broker != nil {
		rd = w.startUnprivileged(ctx, t, cfg)
	} else {
		rd = startRelayd(t, w.lan.NS("relay"), cfg)
	}
	if _, err := rd.WaitLog(ctx, "xmpp component online", 1, nil); err != nil {
		t.Fatal(err)
	}
	w.rd = rd
	return rd
}

// startRelayIn starts relayd in the relay namespace from dir (cfg nil:
// the file already there, as after a restart) and waits until it is
// registered and its API listens (the API may come up just after the
// session).
func (w *world) startRelayIn(ctx context.Context, t *testing.T, dir string, cfg any) *harness.Relayd {
	t.Helper()
	rd := startRelaydIn(t, w.lan.NS("relay"), dir, cfg)
	for _, msg := range []string{"xmpp component online", "provisioning API listening"} {
		if _, err := rd.WaitLog(ctx, msg, 1, nil); err != nil {
			t.Fatal(err)
		}
	}
	return rd
}

// call is a channel with a caller and a callee latched on both legs.
type call struct {
	id             string
	local, remote  netip.AddrPort // relay RTP ports of caller and callee
	caller, callee *harness.Endpoint
	// sent and probes count packets per sending socket (caller RTP,
	// caller RTCP, callee RTP, callee RTCP): all of them, and those sent
	// while latching, which the relay may drop before the peer latched.
	sent, probes [4]int
}

// requestChannel asks for one channel and returns the result.
func (w *world) requestChannel(ctx context.Context, t *testing.T) harness.Outcome {
	t.Helper()
	outs, err := w.req.Run(ctx, harness.RequestArgs{})
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 1 || outs[0].Type != "result" {
		t.Fatalf("channel request: %+v", outs)
	}
	return outs[0]
}

// setUpCall opens caller and callee endpoints for the channel in res and
// latches both parties on both legs the way ICE does: the caller speaks
// first (dropped: the callee has not latched), then the callee retransmits
// until the caller hears it.
func (w *world) setUpCall(ctx context.Context, t *testing.T, res harness.Outcome) *call {
	t.Helper()
	local, remote, err := res.RelayAddrs()
	if err != nil {
		t.Fatal(err)
	}
	if local.Addr() != w.lan.Addr("relay") {
		t.Fatalf("channel host %s, want the relay's public address %s", local.Addr(), w.lan.Addr("relay"))
	}
	c := &call{id: res.Channel["id"], local: local, remote: remote}
	if c.caller, err = w.lan.ListenEndpoint(ctx, "caller", "caller"); err != nil {
		t.Fatal(err)
	}
	if c.callee, err = w.lan.ListenEndpoint(ctx, "callee", "callee"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.caller.Close(); c.callee.Close() })
	callerProbes, calleeProbes, err := harness.Latch(ctx, c.caller, c.callee, local, remote)
	if err != nil {
		t.Fatal(err)
	}
	c.probes = [4]int{callerProbes, callerProbes, calleeProbes, calleeProbes}
	c.sent = c.probes
	if w.fastPath != "" {
		// Both legs latched: wait until the kernel has them, so the
		// media that follows never touches userspace.
		if _, err := w.rd.WaitLog(ctx, "leg offloaded", 2, func(r harness.LogRecord) bool { return r.Str("channel") == c.id }); err != nil {
			t.Fatalf("legs of %s not offloaded: %v", c.id, err)
		}
		// What a donor sees: status names the fast path and counts the
		// legs in the kernel.
		st, err := w.rd.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fp := st.FastPath; fp.Mode != w.fastPath || !fp.Active || fp.By == "" || fp.OffloadedLegs < 2 {
			t.Errorf("status fast_path %+v, want mode %s, active, with this call's 2 legs", fp, w.fastPath)
		}
	}
	return c
}

// exchange sends n RTP and n RTCP packets each way at once and waits until
// all arrived; it returns when every packet was received.
func (c *call) exchange(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	before := [4]int{
		c.callee.RTPStats().Sources["caller"].Packets, c.callee.RTCPStats().Sources["caller"].Packets,
		c.caller.RTPStats().Sources["callee"].Packets, c.caller.RTCPStats().Sources["callee"].Packets,
	}
	pace := harness.Pace{Count: n, Interval: mediaInterval}
	errs := make(chan error, 4)
	go func() { _, err := c.caller.SendRTP(ctx, c.local, pace); errs <- err }()
	go func() { _, err := c.caller.SendRTCP(ctx, harness.RTCPOf(c.local), pace); errs <- err }()
	go func() { _, err := c.callee.SendRTP(ctx, c.remote, pace); errs <- err }()
	go func() { _, err := c.callee.SendRTCP(ctx, harness.RTCPOf(c.remote), pace); errs <- err }()
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i := range c.sent {
		c.sent[i] += n
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second) // an upper bound: returns once all arrived
	defer cancel()
	for _, err := range []error{
		c.callee.WaitRTP(wctx, "caller", before[0]+n), c.callee.WaitRTCP(wctx, "caller", before[1]+n),
		c.caller.WaitRTP(wctx, "callee", before[2]+n), c.caller.WaitRTCP(wctx, "callee", before[3]+n),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// received is what each party got from the other: RTP+RTCP.
func (c *call) received() (byCallee, byCaller int) {
	byCallee = c.callee.RTPStats().Sources["caller"].Packets + c.callee.RTCPStats().Sources["caller"].Packets
	byCaller = c.caller.RTPStats().Sources["callee"].Packets + c.caller.RTCPStats().Sources["callee"].Packets
	return byCallee, byCaller
}

// checkClean fails if any party saw loss, duplicates, junk or packets from
// an unexpected source.
func (c *call) checkClean(t *testing.T) {
	t.Helper()
	for i, ep := range []struct {
		e    *harness.Endpoint
		kind string
		s    harness.Stats
		peer string
	}{
		{c.callee, "RTP", c.callee.RTPStats(), "caller"}, {c.callee, "RTCP", c.callee.RTCPStats(), "caller"},
		{c.caller, "RTP", c.caller.RTPStats(), "callee"}, {c.caller, "RTCP", c.caller.RTCPStats(), "callee"},
	} {
		src := ep.s.Sources[ep.peer]
		// Only latching probes may be missing; everything else arrived once.
		if src.Packets+src.Lost != c.sent[i] || src.Lost > c.probes[i] || src.Duplicates != 0 ||
			ep.s.Invalid != 0 || ep.s.WrongKind != 0 || len(ep.s.Sources) != 1 {
			t.Errorf("%s %s: %d packets from %s (sent %d, %d of them probes), %d lost, %d duplicates, %d invalid, %d wrong kind, %d sources",
				ep.e.Tag, ep.kind, src.Packets, ep.peer, c.sent[i], c.probes[i], src.Lost, src.Duplicates, ep.s.Invalid, ep.s.WrongKind, len(ep.s.Sources))
		}
		// Everything arrives from the relay's port, never from the peer itself.
		for _, from := range src.From {
			if from.Addr() != c.local.Addr() {
				t.Errorf("%s %s received from %s, not from the relay", ep.e.Tag, ep.kind, from)
			}
		}
	}
}

// scrapeMetrics fetches relayd's /metrics inside the relay namespace.
func (w *world) scrapeMetrics(ctx context.Context, t *testing.T, addr netip.AddrPort) string {
	t.Helper()
	return scrapeIn(ctx, t, w.lan.NS("relay"), addr)
}

// channelEnd stops relayd and returns the channel's final log record.
func channelEnd(ctx context.Context, t *testing.T, rd *harness.Relayd, id string) harness.LogRecord {
	t.Helper()
	if err := rd.Stop(); err != nil {
		t.Fatalf("relayd did not stop cleanly: %v", err)
	}
	rec, err := rd.WaitLog(ctx, "channel ended", 1, func(r harness.LogRecord) bool { return r.Str("channel") == id })
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func (w *world) testCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := w.relayConfig()
	cfg.Metrics.Listen = "127.0.0.1:9477"
	rd := w.startRelay(ctx, t, cfg)
	res := w.requestChannel(ctx, t)
	for _, attr := range []string{"id", "host", "localport", "remoteport", "protocol", "expire"} {
		if res.Channel[attr] == "" {
			t.Errorf("channel result lacks %s: %+v", attr, res.Channel)
		}
	}
	if res.Channel["protocol"] != "udp" || res.Channel["expire"] != "60" {
		t.Errorf("channel result %+v", res.Channel)
	}
	w.checkOtherRequests(ctx, t)
	// Channels granted but not used (checkOtherRequests') served no call.
	served := []string{`relayd_calls_served_total{kind="channel"} 0`, `relayd_calls_served_total{kind="turn"} 0`}
	if scrape := w.scrapeMetrics(ctx, t, netip.MustParseAddrPort(cfg.Metrics.Listen)); !strings.Contains(scrape, "\n"+served[0]+"\n") ||
		!strings.Contains(scrape, "\n"+served[1]+"\n") {
		t.Errorf("before the call, metrics lack %q", served)
	}
	// The relay's own STUN server tells the caller its address.
	stunClient := netip.AddrPortFrom(w.lan.Addr("caller"), 5000)
	if mapped := pionBinding(t, w.lan.NS("caller"), stunClient, netip.AddrPortFrom(w.lan.Addr("relay"), 3478)); mapped != stunClient {
		t.Errorf("relay's STUN server said %s, want %s", mapped, stunClient)
	}
	c := w.setUpCall(ctx, t, res)
	if c.local.Port()%2 != 0 || c.remote.Port() != c.local.Port()+2 {
		t.Fatalf("ports %d/%d: want even P and P+2", c.local.Port(), c.remote.Port())
	}
	c.exchange(ctx, t, media)
	c.exchange(ctx, t, media)
	c.checkClean(t)

	byCallee, byCaller := c.received()
	// Prometheus sees the live counters while the call is up.
	scrape := w.scrapeMetrics(ctx, t, netip.MustParseAddrPort(cfg.Metrics.Listen))
	for _, want := range []string{
		"relayd_channels_active 4", // the call and the three channels of checkOtherRequests
		fmt.Sprintf(`relayd_relayed_packets_total{direction="local_to_remote"} %d`, byCallee),
		fmt.Sprintf(`relayd_relayed_packets_total{direction="remote_to_local"} %d`, byCaller),
		`relayd_xmpp_session_up{service="` + w.srv.Kind + `"} 1`,
		`relayd_calls_served_total{kind="channel"} 1`, // with the fast path, by the kernel's counters
		`relayd_calls_served_total{kind="turn"} 0`,
	} {
		if !strings.Contains(scrape, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if w.fastPath != "" {
		for _, want := range []string{"relayd_fastpath_active 1", "relayd_fastpath_offloaded_legs 2"} {
			if !strings.Contains(scrape, want+"\n") {
				t.Errorf("metrics lack %q", want)
			}
		}
		// Every media packet went through the kernel; latching probes
		// may have gone either way.
		var kernel int
		if i := strings.Index(scrape, `relayd_fastpath_packets_total{direction="local_to_remote"} `); i < 0 {
			t.Error("metrics lack relayd_fastpath_packets_total")
		} else if _, err := fmt.Sscan(scrape[i+len(`relayd_fastpath_packets_total{direction="local_to_remote"} `):], &kernel); err != nil ||
			kernel < 4*media || kernel > byCallee {
			t.Errorf("the kernel forwarded %d packets caller to callee (%v), want %d to %d", kernel, err, 4*media, byCallee)
		}
	}
	end := channelEnd(ctx, t, rd, c.id)
	// The relay's counters and the parties' receipts agree exactly.
	if got := end.Int("packets_local_to_remote"); got != int64(byCallee) || byCallee < 4*media {
		t.Errorf("caller->callee: relay forwarded %d, callee received %d, media sent %d", got, byCallee, 4*media)
	}
	if got := end.Int("packets_remote_to_local"); got != int64(byCaller) || byCaller < 4*media+2 {
		t.Errorf("callee->caller: relay forwarded %d, caller received %d (media %d + latch probes)", got, byCaller, 4*media)
	}
	// Every packet sent was either forwarded, or dropped before its peer
	// latched or had shown it carries the call (its probe budget spent).
	sent := c.sent[0] + c.sent[1] + c.sent[2] + c.sent[3]
	if got := end.Int("packets_local_to_remote") + end.Int("packets_remote_to_local") + end.Int("dropped_peer_not_latched") + end.Int("dropped_unconfirmed_peer"); got != int64(sent) {
		t.Errorf("relay accounted for %d packets, the parties sent %d: %v", got, sent, end)
	}
	if end.Int("dropped_foreign_source") != 0 || end.Int("relatched") != 0 {
		t.Errorf("unexpected drops: %v", end)
	}
	// Where the packets went: with the fast path every media packet went
	// through the kernel, and userspace forwarded only latching probes;
	// without it the kernel forwarded nothing.
	kl2r, kr2l := end.Int("kernel_packets_local_to_remote"), end.Int("kernel_packets_remote_to_local")
	ul2r, ur2l := end.Int("packets_local_to_remote")-kl2r, end.Int("packets_remote_to_local")-kr2l
	if w.fastPath != "" {
		if ul2r > int64(c.probes[0]+c.probes[1]) || ur2l > int64(c.probes[2]+c.probes[3]) || kl2r < 4*media || kr2l < 4*media {
			t.Errorf("userspace forwarded %d/%d (probes %d/%d), the kernel %d/%d: %v", ul2r, ur2l, c.probes[0]+c.probes[1], c.probes[2]+c.probes[3], kl2r, kr2l, end)
		}
	} else if kl2r != 0 || kr2l != 0 {
		t.Errorf("the kernel forwarded %d/%d with the fast path off", kl2r, kr2l)
	}
}

// offloadedCall starts relayd and a call whose legs are in the kernel
// (setUpCall waits for that), with two minutes for the test (an upper bound).
func (w *world) offloadedCall(t *testing.T) (context.Context, *harness.Relayd, *call) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	rd := w.startRelay(ctx, t, w.relayConfig())
	c := w.setUpCall(ctx, t, w.requestChannel(ctx, t))
	c.exchange(ctx, t, 20)
	return ctx, rd, c
}

// testStaleTable kills relayd (SIGKILL) in the middle of an offloaded
// call: its nftables table outlives it, and the next relayd replaces it
// with an empty one at start and deletes it at a clean stop.
func (w *world) testStaleTable(t *testing.T) {
	ctx, rd, _ := w.offloadedCall(t)
	peer := w.lan.Addr("caller").String()
	if err := rd.Kill(); err != nil {
		t.Fatal(err)
	}
	if l := w.nftTable(t); !strings.Contains(l, peer) {
		t.Fatalf("after SIGKILL the table should still hold the call's peer %s:\n%s", peer, l)
	}
	rd2 := w.startRelay(ctx, t, w.relayConfig())
	if l := w.nftTable(t); l == "" || strings.Contains(l, peer) {
		t.Fatalf("after a restart the table should be new and empty:\n%s", l)
	}
	if err := rd2.Stop(); err != nil {
		t.Fatal(err)
	}
	if l := w.nftTable(t); l != "" {
		t.Fatalf("table left after a clean stop:\n%s", l)
	}
}

// testKilledForwarder kills relayd (SIGKILL) in the middle of a call
// offloaded to the eBPF program: the kernel detaches it with the process
// (TCX links), so nothing forwards the call's media until a new relayd
// takes the ports. A program left behind would keep relaying to peers
// nobody latched any more.
func (w *world) testKilledForwarder(t *testing.T) {
	ctx, rd, c := w.offloadedCall(t)
	if !strings.Contains(w.tcFilters(t), "jnrelay_fwd") && !strings.Contains(rd.Logs(), "(tcx)") {
		t.Fatalf("the program is neither a clsact filter nor a TCX link:\n%s", rd.Logs())
	}
	gone := 0
	if w.broker != nil {
		gone = strings.Count(w.broker.out.String(), "client gone, its table removed")
	}
	if err := rd.Kill(); err != nil {
		t.Fatal(err)
	}
	if w.broker != nil {
		// The broker holds the program: it removes it, TCX link or
		// clsact filter, once it sees its client gone.
		if err := w.broker.wait(ctx, "client gone, its table removed", gone+1); err != nil {
			t.Fatal(err)
		}
		if f := w.tcFilters(t); strings.Contains(f, "jnrelay_fwd") {
			t.Fatalf("the broker left its filter after relayd was killed:\n%s", f)
		}
	}
	if f := w.tcFilters(t); strings.Contains(f, "jnrelay_fwd") {
		t.Skipf("clsact attachment (a kernel before 6.6): the filter outlives the process until the next start:\n%s", f)
	}
	before, _ := c.received()
	pace := harness.Pace{Count: 20, Interval: mediaInterval}
	if _, err := c.caller.SendRTP(ctx, c.local, pace); err != nil {
		t.Fatal(err)
	}
	// The caller's media crossed the relay's namespace or died there.
	// A marker sent after it from the caller's host to the callee's,
	// through the same bridge port, arrives after it: once the marker is
	// in, what the callee has is final.
	if err := w.marker(t); err != nil {
		t.Fatal(err)
	}
	if after, _ := c.received(); after != before {
		t.Fatalf("the callee received %d datagrams after relayd was killed: a program outlived it", after-before)
	}
	rd2 := w.startRelay(ctx, t, w.relayConfig())
	if err := rd2.Stop(); err != nil {
		t.Fatal(err)
	}
}

// marker sends one datagram from the caller's host to the callee's
// (port 9, outside the parties' endpoints) and waits for it.
func (w *world) marker(t *testing.T) error {
	t.Helper()
	dst := netip.AddrPortFrom(w.lan.Addr("callee"), 9)
	rx, err := harness.ListenUDPIn(w.lan.NS("callee"), dst)
	if err != nil {
		return err
	}
	defer rx.Close()
	tx, err := harness.ListenUDPIn(w.lan.NS("caller"), netip.AddrPortFrom(w.lan.Addr("caller"), 0))
	if err != nil {
		return err
	}
	defer tx.Close()
	if _, err := tx.WriteToUDPAddrPort([]byte("marker"), dst); err != nil {
		return err
	}
	_ = rx.SetReadDeadline(time.Now().Add(20 * time.Second)) // an upper bound: the read returns on arrival
	if _, _, err := rx.ReadFromUDPAddrPort(make([]byte, 64)); err != nil {
		return fmt.Errorf("marker datagram: %w", err)
	}
	return nil
}

// tcFilters lists the clsact ingress filters of the relay host's bridge.
func (w *world) tcFilters(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", w.lan.NS("relay"), "tc", "filter", "show", "dev", "br0", "ingress").CombinedOutput()
	if err != nil && !strings.Contains(string(out), "Cannot find") {
		t.Fatalf("tc filter show: %v: %s", err, out)
	}
	return string(out)
}

// checkOtherRequests sends, through the real server, the other requests a
// relay answers: the legacy and attribute-less channel forms, services,
// disco#info and ping.
func (w *world) checkOtherRequests(ctx context.Context, t *testing.T) {
	t.Helper()
	for _, tc := range []struct {
		name  string
		args  harness.RequestArgs
		check func(harness.Outcome) bool
	}{
		{"legacy candidate", harness.RequestArgs{Legacy: true}, func(o harness.Outcome) bool {
			return o.Element == "candidate" && o.Channel["localport"] != ""
		}},
		{"no protocol attribute", harness.RequestArgs{Protocol: "none"}, func(o harness.Outcome) bool {
			return o.Channel["protocol"] == "udp" && o.Channel["localport"] != ""
		}},
		{"to a localpart at the relay", harness.RequestArgs{Relay: "node@" + w.srv.ComponentDomain}, func(o harness.Outcome) bool {
			return o.Channel["localport"] != ""
		}},
		{"services", harness.RequestArgs{Raw: `<services xmlns='http://jabber.org/protocol/jinglenodes'/>`}, func(o harness.Outcome) bool {
			return strings.Contains(o.Payload, "relay") && strings.Contains(o.Payload, `address="`+w.srv.ComponentDomain+`"`) &&
				strings.Contains(o.Payload, `policy="public"`)
		}},
		{"disco#info", harness.RequestArgs{Raw: `<query xmlns='http://jabber.org/protocol/disco#info'/>`}, func(o harness.Outcome) bool {
			return strings.Contains(o.Payload, `category="proxy"`) && strings.Contains(o.Payload, `type="relay"`) &&
				strings.Contains(o.Payload, `var="http://jabber.org/protocol/jinglenodes#channel"`) &&
				strings.Contains(o.Payload, `var="http://jabber.org/protocol/jinglenodes"`) &&
				strings.Contains(o.Payload, `var="urn:xmpp:ping"`)
		}},
		{"ping", harness.RequestArgs{Raw: `<ping xmlns='urn:xmpp:ping'/>`}, func(o harness.Outcome) bool { return true }},
		{"XEP-0215 services", harness.RequestArgs{Raw: `<services xmlns='urn:xmpp:extdisco:2'/>`}, func(o harness.Outcome) bool {
			return strings.Contains(o.Payload, `type="stun"`) && strings.Contains(o.Payload, `host="`+w.lan.Addr("relay").String()+`"`) &&
				strings.Contains(o.Payload, `port="3478"`)
		}},
	} {
		outs, err := w.req.Run(ctx, tc.args)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(outs) != 1 || outs[0].Type != "result" || !tc.check(outs[0]) {
			t.Errorf("%s: answered %+v", tc.name, outs)
		}
	}
}

func (w *world) testIntruder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rd := w.startRelay(ctx, t, w.relayConfig())
	c := w.setUpCall(ctx, t, w.requestChannel(ctx, t))

	evil, err := w.lan.ListenEndpoint(ctx, "evil", "evil")
	if err != nil {
		t.Fatal(err)
	}
	defer evil.Close()
	const attack = 300
	attacked := make(chan error, 1)
	go func() {
		// During the call, at both latched RTP ports and one RTCP port.
		pace := harness.Pace{Count: attack, Interval: time.Millisecond}
		_, err1 := evil.SendRTP(ctx, c.local, pace)
		_, err2 := evil.SendRTP(ctx, c.remote, pace)
		_, err3 := evil.SendRTCP(ctx, harness.RTCPOf(c.local), pace)
		attacked <- fmt.Errorf("%v %v %v", err1, err2, err3)
	}()
	c.exchange(ctx, t, media)
	if err := <-attacked; err.Error() != "<nil> <nil> <nil>" {
		t.Fatal(err)
	}
	c.exchange(ctx, t, media) // the call goes on after the attack
	c.checkClean(t)
	for _, s := range []harness.Stats{c.caller.RTPStats(), c.caller.RTCPStats(), c.callee.RTPStats(), c.callee.RTCPStats()} {
		if n := s.Sources["evil"].Packets; n != 0 {
			t.Fatalf("%d attacker packets reached the call", n)
		}
	}
	if st := evil.RTPStats(); st.Packets+st.Invalid != 0 {
		t.Fatalf("the relay sent %d packets to the attacker", st.Packets+st.Invalid)
	}
	end := channelEnd(ctx, t, rd, c.id)
	// Each attacked port drops the first datagrams in userspace, then
	// raises its in-kernel shield — a source filter on its socket, or on
	// steered ports an entry of the steering program's port map — whose
	// drops the kernel counts: together they are every attack datagram.
	user, kern := end.Int("dropped_foreign_source"), end.Int("dropped_foreign_source_kernel")
	if user+kern != 3*attack {
		t.Errorf("dropped_foreign_source %d + dropped_foreign_source_kernel %d, want %d", user, kern, 3*attack)
	}
	if kern == 0 {
		t.Errorf("no attack datagram was dropped in the kernel (userspace drops %d): the shield never went up", user)
	}
	if end.Int("relatched") != 0 {
		t.Errorf("a latch moved to the attacker: %v", end)
	}
}

func (w *world) testErrorsAndExpiry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := w.relayConfig()
	cfg.Ports = config.PortRange{Min: 40100, Max: 40103} // room for exactly one channel
	cfg.Channel.ExpireSeconds = 2
	rd := w.startRelay(ctx, t, cfg)

	// The first requester stays online to hear the channel's end (the
	// event wait is only an upper bound: four requester processes start
	// meanwhile, slow on a busy machine).
	first, err := w.req.Start(ctx, harness.RequestArgs{WaitEvents: 1, Timeout: 90 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Stop()
	res, err := first.Next(ctx)
	if err != nil || res.Type != "result" {
		t.Fatalf("first channel: %+v %v", res, err)
	}
	c := w.setUpCall(ctx, t, res)
	c.exchange(ctx, t, 20)

	for _, tc := range []struct {
		name      string
		args      harness.RequestArgs
		condition string
	}{
		{"pool of one", harness.RequestArgs{}, "resource-constraint"},
		{"tcp", harness.RequestArgs{Protocol: "tcp"}, "feature-not-implemented"},
		{"malformed protocol", harness.RequestArgs{Raw: `<channel xmlns='http://jabber.org/protocol/jinglenodes#channel' protocol='carrier-pigeon'/>`}, "bad-request"},
		{"unknown payload", harness.RequestArgs{Raw: `<query xmlns='jabber:iq:version'/>`}, "service-unavailable"},
	} {
		var outs []harness.Outcome
		if tc.condition == "resource-constraint" {
			// The call keeps talking meanwhile: a requester that takes
			// longer than expire_seconds to connect (a loaded machine)
			// must still find the pool full.
			mctx, stop := context.WithCancel(ctx)
			talked := make(chan struct{})
			go func() {
				defer close(talked)
				_, _ = c.caller.SendRTP(mctx, c.local, harness.Pace{Count: 3000, Interval: 20 * time.Millisecond})
			}()
			outs, err = w.req.Run(ctx, tc.args)
			stop()
			<-talked
		} else {
			outs, err = w.req.Run(ctx, tc.args)
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(outs) != 1 || outs[0].Type != "error" || outs[0].Condition != tc.condition {
			t.Errorf("%s: got %+v, want error %s", tc.name, outs, tc.condition)
		}
	}

	// Silence: the channel expires, the requester hears "killed".
	silentSince := time.Now()
	ev, err := first.Next(ctx)
	if err != nil {
		t.Fatalf("no killed event: %v", err)
	}
	if ev.Type != "event" || ev.Attrs["event"] != "killed" || ev.Attrs["id"] != c.id || ev.From != w.srv.ComponentDomain {
		t.Fatalf("event %+v, want killed for %s from %s", ev, c.id, w.srv.ComponentDomain)
	}
	if waited := time.Since(silentSince); waited > 10*time.Second {
		t.Errorf("expiry took %s with expire_seconds=2", waited)
	}
	if _, err := rd.WaitLog(ctx, "channel ended", 1, func(r harness.LogRecord) bool {
		return r.Str("channel") == c.id && r.Str("reason") == "expired"
	}); err != nil {
		t.Fatal(err)
	}

	// The ports are free again: the only block is granted anew.
	again := w.requestChannel(ctx, t)
	if again.Channel["localport"] != res.Channel["localport"] || again.Channel["id"] == c.id {
		t.Fatalf("after expiry got %+v, want the same ports as %+v with a new id", again.Channel, res.Channel)
	}
	c2 := w.setUpCall(ctx, t, again)
	c2.exchange(ctx, t, 20)
	c2.checkClean(t)
}

// testDrainOnSIGTERM stops relayd the way systemd does: new requests are
// refused at once, the live call goes on, and when it ends (here by
// expiry, its requester told) relayd exits 0 without waiting out the rest
// of the grace.
func (w *world) testDrainOnSIGTERM(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := w.relayConfig()
	cfg.Ports = config.PortRange{Min: 40200, Max: 40207}
	cfg.Channel.ExpireSeconds = 2
	cfg.Channel.DrainSeconds = 40 // far longer than the call lasts
	rd := w.startRelay(ctx, t, cfg)

	// The event wait is only an upper bound: the killed event ends it.
	first, err := w.req.Start(ctx, harness.RequestArgs{WaitEvents: 1, Timeout: 90 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Stop()
	res, err := first.Next(ctx)
	if err != nil || res.Type != "result" {
		t.Fatalf("channel: %+v %v", res, err)
	}
	c := w.setUpCall(ctx, t, res)
	c.exchange(ctx, t, 10)

	if err := rd.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.WaitLog(ctx, "draining: no new channels", 1, func(r harness.LogRecord) bool { return r.Int("live") == 1 }); err != nil {
		t.Fatal(err)
	}
	outs, err := w.requestWhileTalking(ctx, t, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 1 || outs[0].Type != "error" || outs[0].Condition != "service-unavailable" {
		t.Fatalf("request while draining: %+v, want error service-unavailable", outs)
	}
	c.exchange(ctx, t, 20) // the call goes on
	c.checkClean(t)

	// The call falls silent and expires: its requester hears of it (the
	// XMPP session is still up), then relayd exits.
	silent := time.Now()
	ev, err := first.Next(ctx)
	if err != nil || ev.Attrs["event"] != "killed" || ev.Attrs["id"] != c.id {
		t.Fatalf("killed event: %+v %v", ev, err)
	}
	if err := rd.Wait(ctx); err != nil {
		t.Fatalf("relayd exit after the drain: %v", err)
	}
	if took := time.Since(silent); took > 20*time.Second {
		t.Errorf("exit %s after the call fell silent: the drain waited for its grace instead of the last call", took)
	}
	if _, err := rd.WaitLog(ctx, "drained: every call has ended", 1, nil); err != nil {
		t.Fatal(err)
	}
}

// requestWhileTalking runs a second requester while c's media keeps
// flowing. Starting a requester process and logging it in takes an
// unknown time on a busy machine, easily longer than a short channel
// expiry; a call left silent meanwhile would expire by accident.
func (w *world) requestWhileTalking(ctx context.Context, t *testing.T, c *call) ([]harness.Outcome, error) {
	t.Helper()
	type answer struct {
		outs []harness.Outcome
		err  error
	}
	answered := make(chan answer, 1)
	go func() {
		outs, err := w.req.Run(ctx, harness.RequestArgs{})
		answered <- answer{outs, err}
	}()
	for {
		c.exchange(ctx, t, 25) // bounded by ctx, which also ends the requester
		select {
		case a := <-answered:
			return a.outs, a.err
		default:
		}
	}
}

// testLiveReload changes the configuration under a live call with SIGHUP:
// an invalid file is refused, a new port range and limit apply to new
// channels while the call goes on, and a service that cannot log in is
// rolled back.
func (w *world) testLiveReload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := w.relayConfig()
	rd := w.startRelay(ctx, t, cfg)
	c := w.setUpCall(ctx, t, w.requestChannel(ctx, t))
	c.exchange(ctx, t, 50)

	if err := os.WriteFile(rd.ConfigPath, []byte(`{"ports": {"min": 1}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	rd.Signal(syscall.SIGHUP)
	if _, err := rd.WaitLog(ctx, "reload refused: the configuration file is invalid; keeping the running one", 1, nil); err != nil {
		t.Fatal(err)
	}
	c.exchange(ctx, t, 50)

	next := cfg
	next.Ports = config.PortRange{Min: 40300, Max: 40399}
	next.Channel.MaxKbps = 2000
	if err := rd.WriteConfig(next); err != nil {
		t.Fatal(err)
	}
	rd.Signal(syscall.SIGHUP)
	if _, err := rd.WaitLog(ctx, "configuration applied", 1, nil); err != nil {
		t.Fatal(err)
	}
	c.exchange(ctx, t, 50)
	res := w.requestChannel(ctx, t)
	if p, _ := strconv.Atoi(res.Channel["localport"]); p < 40300 || p > 40399 || res.Channel["maxkbps"] != "2000" {
		t.Fatalf("channel after reload %+v, want ports 40300-40399 and maxkbps 2000", res.Channel)
	}
	// The component re-registered? It must not have: its settings did not change.
	if n := rd.Count("xmpp component online", nil); n != 1 {
		t.Fatalf("component connected %d times, want once (unchanged services stay up)", n)
	}

	// A wrong secret: the service cannot come online, relayd rolls back.
	broken := next
	broken.XMPP = append([]config.Service(nil), next.XMPP...)
	broken.XMPP[0].Secret = "wrong"
	if err := rd.WriteConfig(broken); err != nil {
		t.Fatal(err)
	}
	rd.Signal(syscall.SIGHUP)
	if _, err := rd.WaitLog(ctx, "reload failed; the previous configuration is back in force", 1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.WaitLog(ctx, "xmpp component online", 2, nil); err != nil {
		t.Fatal(err) // the previous component settings are connected again
	}
	c.exchange(ctx, t, 50)
	c.checkClean(t)
	if res := w.requestChannel(ctx, t); res.Channel["maxkbps"] != "2000" {
		t.Fatalf("after rollback %+v", res.Channel)
	}
}

func (w *world) testServerKilledMidCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rd := w.startRelay(ctx, t, w.relayConfig())
	c := w.setUpCall(ctx, t, w.requestChannel(ctx, t))
	c.exchange(ctx, t, media/2)

	if err := w.srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.WaitLog(ctx, "xmpp session lost, reconnecting", 1, nil); err != nil {
		t.Fatal(err)
	}
	// Media keeps flowing with no XMPP server at all.
	c.exchange(ctx, t, media)

	if err := w.srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.WaitLog(ctx, "xmpp component online", 2, nil); err != nil {
		t.Fatal(err)
	}
	c.exchange(ctx, t, media/2)
	c.checkClean(t)

	// A new channel works through the re-registered component.
	c2 := w.setUpCall(ctx, t, w.requestChannel(ctx, t))
	c2.exchange(ctx, t, 20)
	c2.checkClean(t)
	if c2.id == c.id || strings.TrimSpace(c2.id) == "" {
		t.Fatalf("new channel id %q", c2.id)
	}
}
