package e2e

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// webrtcFlags let Chromium's WebRTC use the namespace's loopback (where
// relayd and its TURN server are) and announce host candidates by
// address rather than as mDNS names nobody in the namespace resolves.
var webrtcFlags = []string{"--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"}

// webrtcWithin is the page's upper bound for each awaited step: it only
// catches a hang, a loaded 2-core machine stays far below it.
const webrtcWithin = 60 * time.Second

// TestWebRTCThroughBuiltinTURN is a browser call through relayd's
// built-in TURN server, with credentials a third-party XMPP client
// (slixmpp) fetched over XEP-0215 from relayd's component on Prosody:
// two RTCPeerConnections in headless Chromium exchange data-channel
// messages both ways, the relay-only one over a relay candidate on a
// relay port; relayd counts the allocations and the bytes. With a wrong
// password Chromium gathers no relay candidate and relayd allocates
// nothing.
//
// Only the caller is restricted to relay candidates: the callee gathers
// relay candidates too (an allocation of its own) but is reached at its
// own address (the server-reflexive one the TURN server's Binding answer
// shows, its loopback socket), because relayd refuses to relay between
// two of its own relay ports: a relay-to-relay pair never works, by
// design.
func TestWebRTCThroughBuiltinTURN(t *testing.T) {
	harness.RequireRoot(t)
	chromium := chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute) // an upper bound: Chromium is slow on a busy machine
	defer cancel()

	lan := harness.NewLAN(t, "jnb", "relay") // Prosody, relayd and Chromium on this namespace's loopback
	srv, err := harness.StartProsody(ctx, harness.ServerOptions{Netns: lan.NS("relay"), Users: map[string]string{user: password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cfg := config.Default()
	cfg.PublicAddress, cfg.ListenAddress = "127.0.0.1", "127.0.0.1"
	cfg.Ports = config.PortRange{Min: 40000, Max: 40099}
	cfg.Channel.FastPath = config.FastPathOff
	cfg.TURN.Builtin.Enabled = true
	cfg.XMPP = []config.Service{{Name: srv.Kind, Type: "component", Server: srv.Component.String(),
		Domain: srv.ComponentDomain, Secret: srv.Secret}}
	rd := startRelaydIn(t, lan.NS("relay"), t.TempDir(), cfg)
	for _, msg := range []string{"xmpp component online", "TURN server started"} {
		if _, err := rd.WaitLog(ctx, msg, 1, nil); err != nil {
			t.Fatal(err)
		}
	}

	// The requester is a Prosody user the relay's policy (public) admits.
	services, err := srv.Requester(user, password).ExternalServices(ctx, "", "turn")
	if err != nil {
		t.Fatal(err)
	}
	var turnUDP *harness.ExternalService
	for i, s := range services {
		if s.Type == "turn" && s.Transport == "udp" {
			turnUDP = &services[i]
		}
	}
	if turnUDP == nil || turnUDP.Host != "127.0.0.1" || turnUDP.Port != cfg.TURN.Builtin.Port ||
		turnUDP.Username == "" || turnUDP.Password == "" || !turnUDP.Restricted {
		t.Fatalf("XEP-0215 TURN services %+v: want udp at 127.0.0.1:%d with credentials", services, cfg.TURN.Builtin.Port)
	}
	iceServers := []iceServer{{URLs: "turn:127.0.0.1:" + strconv.Itoa(turnUDP.Port) + "?transport=udp",
		Username: turnUDP.Username, Credential: turnUDP.Password}}

	b := startBrowser(ctx, t, chromium, lan.NS("relay"), artifactsDir(t, "webrtc"), webrtcFlags...)
	var call webrtcCall
	b.await("a data-channel call through relayd's TURN server", webrtcCallJS, iceServers, &call)
	t.Logf("caller's pair %+v -> %+v; callee's pair %+v -> %+v", call.Caller.Local, call.Caller.Remote, call.Callee.Local, call.Callee.Remote)
	if want := []string{"caller 1", "caller 2", "caller 3"}; strings.Join(call.AtCallee, ",") != strings.Join(want, ",") {
		t.Errorf("callee got %q, want %q", call.AtCallee, want)
	}
	if want := []string{"callee 1", "callee 2", "callee 3"}; strings.Join(call.AtCaller, ",") != strings.Join(want, ",") {
		t.Errorf("caller got %q, want %q", call.AtCaller, want)
	}
	if l := call.Caller.Local; l.CandidateType != "relay" || l.RelayProtocol != "udp" || l.Address != "127.0.0.1" ||
		l.Port < cfg.Ports.Min || l.Port > cfg.Ports.Max {
		t.Errorf("caller's selected local candidate %+v: want a relay candidate on a relay port %d-%d", l, cfg.Ports.Min, cfg.Ports.Max)
	}
	if l, r := call.Caller.Local, call.Callee.Remote; r.Address != l.Address || r.Port != l.Port {
		t.Errorf("the callee's selected remote candidate %+v is not the caller's relay candidate %+v", r, l)
	}
	st, err := rd.Status(ctx)
	if err != nil || st.TURN == nil {
		t.Fatalf("status: %v %+v", err, st.TURN)
	}
	// Caller and callee each allocated; the caller's messages went to the
	// callee as a peer and its answers came back from it.
	t.Logf("relayd TURN counters after the call: %+v", *st.TURN)
	if st.TURN.AllocationsTotal < 2 || st.TURN.BytesToPeers == 0 || st.TURN.BytesFromPeers == 0 {
		t.Errorf("relayd's TURN counters %+v: want 2 allocations or more and bytes both ways", *st.TURN)
	}

	bad := []iceServer{iceServers[0]}
	bad[0].Credential = "x" + turnUDP.Password[1:]
	var gathered struct {
		Types, Errors []string
	}
	b.await("ICE gathering with a wrong password", webrtcGatherJS, bad, &gathered)
	t.Logf("gathered with a wrong password: candidates %q, errors %q", gathered.Types, gathered.Errors)
	for _, typ := range gathered.Types {
		if typ == "relay" {
			t.Errorf("a relay candidate was gathered with a wrong password: %q", gathered.Types)
		}
	}
	// pion answers a wrong password's Allocate with an error (its
	// integrity check fails); Chromium reports it as a candidate error.
	if !strings.Contains(strings.Join(gathered.Errors, ";"), "TURN allocate error") {
		t.Errorf("no TURN allocate error with a wrong password: %q", gathered.Errors)
	}
	after, err := rd.Status(ctx)
	if err != nil || after.TURN == nil {
		t.Fatalf("status: %v %+v", err, after.TURN)
	}
	if after.TURN.AllocationsTotal != st.TURN.AllocationsTotal {
		t.Errorf("allocations %d -> %d with a wrong password", st.TURN.AllocationsTotal, after.TURN.AllocationsTotal)
	}
	if after.TURN.Refused["auth"] <= st.TURN.Refused["auth"] {
		t.Errorf("auth refusals %d -> %d with a wrong password", st.TURN.Refused["auth"], after.TURN.Refused["auth"])
	}
	b.checkConsole()
}

// iceServer is an RTCIceServer.
type iceServer struct {
	URLs       string `json:"urls"`
	Username   string `json:"username"`
	Credential string `json:"credential"`
}

// iceCandidate is the part of an RTCIceCandidateStats the test reads.
type iceCandidate struct {
	CandidateType, Address, Protocol, RelayProtocol string
	Port                                            int
}

// webrtcCall is what webrtcCallJS resolves to.
type webrtcCall struct {
	AtCaller, AtCallee []string // messages received, in order
	Caller, Callee     struct{ Local, Remote iceCandidate }
}

// webrtcPrelude defines the helpers of the page scripts: within bounds a
// promise (rejecting with the events seen so far), gathered resolves
// when a connection's ICE gathering is complete.
const webrtcPrelude = `
const seen = [];
const within = (p, what) => Promise.race([p, new Promise((_, reject) =>
	setTimeout(() => reject(new Error('timed out: ' + what + '; events: ' + seen.join('; '))), WITHIN))]);
const gathered = pc => new Promise(resolve => {
	const check = () => pc.iceGatheringState === 'complete' && resolve();
	pc.addEventListener('icegatheringstatechange', check);
	check();
});
const watch = (name, pc) => {
	pc.addEventListener('icecandidateerror', e => seen.push(name + ' candidate error ' + e.errorCode + ' ' + e.errorText + ' ' + e.url));
	pc.addEventListener('iceconnectionstatechange', () => seen.push(name + ' ice ' + pc.iceConnectionState));
};
`

// webrtcCallJS connects a relay-only caller to a callee (complete offer
// and answer, no trickling), opens a negotiated data channel, sends three
// messages each way and reports them with each side's selected pair.
const webrtcCallJS = `async iceServers => {` + webrtcPrelude + `
	const caller = new RTCPeerConnection({iceServers, iceTransportPolicy: 'relay'});
	const callee = new RTCPeerConnection({iceServers});
	watch('caller', caller);
	watch('callee', callee);
	const channels = [caller, callee].map(pc => pc.createDataChannel('jnrelay', {negotiated: true, id: 0}));
	const got = [[], []];
	const all = channels.map((ch, i) => new Promise(resolve => ch.addEventListener('message', e => {
		got[i].push(e.data);
		if (got[i].length === 3) resolve();
	})));
	const opened = channels.map(ch => new Promise(resolve => ch.addEventListener('open', resolve, {once: true})));
	await caller.setLocalDescription();
	await within(gathered(caller), "the caller's candidates");
	await callee.setRemoteDescription(caller.localDescription);
	await callee.setLocalDescription();
	await within(gathered(callee), "the callee's candidates");
	await caller.setRemoteDescription(callee.localDescription);
	await within(Promise.all(opened), 'the data channel open');
	for (let i = 1; i <= 3; i++) {
		channels[0].send('caller ' + i);
		channels[1].send('callee ' + i);
	}
	await within(Promise.all(all), 'the messages');
	const selected = async pc => {
		const stats = await pc.getStats();
		let pair;
		stats.forEach(s => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
		const pick = c => c && {candidateType: c.candidateType, address: c.address, port: c.port, protocol: c.protocol, relayProtocol: c.relayProtocol || ''};
		return pair ? {local: pick(stats.get(pair.localCandidateId)), remote: pick(stats.get(pair.remoteCandidateId))} : {};
	};
	const result = {atCaller: got[0], atCallee: got[1], caller: await selected(caller), callee: await selected(callee)};
	caller.close();
	callee.close();
	return result;
}`

// webrtcGatherJS gathers a relay-only connection's candidates and
// reports their types and the candidate errors.
const webrtcGatherJS = `async iceServers => {` + webrtcPrelude + `
	const pc = new RTCPeerConnection({iceServers, iceTransportPolicy: 'relay'});
	const types = [], errors = [];
	pc.addEventListener('icecandidate', e => e.candidate && e.candidate.candidate && types.push(e.candidate.type));
	pc.addEventListener('icecandidateerror', e => errors.push(e.errorCode + ' ' + e.errorText));
	pc.createDataChannel('jnrelay');
	await pc.setLocalDescription();
	await within(gathered(pc), 'the end of gathering');
	pc.close();
	return {types, errors};
}`

// await calls the async page function fn with arg and waits for its
// promise, decoding what it resolves to into res; a rejection fails the
// test with its message.
func (b *browser) await(what, fn string, arg, res any) {
	b.t.Helper()
	raw, err := json.Marshal(arg)
	if err != nil {
		b.t.Fatal(err)
	}
	fn = strings.ReplaceAll(fn, "WITHIN", strconv.Itoa(int(webrtcWithin.Milliseconds())))
	ctx, cancel := context.WithTimeout(b.ctx, 4*webrtcWithin) // every step is bounded in the page; this catches a hung browser
	defer cancel()
	err = chromedp.Run(ctx, chromedp.Evaluate("("+fn+")("+string(raw)+")", res,
		func(p *cdpruntime.EvaluateParams) *cdpruntime.EvaluateParams { return p.WithAwaitPromise(true) }))
	if err != nil {
		b.fail(what + ": " + err.Error())
	}
}
