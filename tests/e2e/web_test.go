package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/provision"
	"github.com/jnrelay/jnrelay/relayd/daemon"
	"github.com/jnrelay/jnrelay/relayd/turn"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// webAPIAddr is where relayd serves the API over TCP inside the relay
// namespace (fresh per test, so the port is free).
const webAPIAddr = "127.0.0.1:8787"

// TestWebPage drives the donor web page in headless Chromium, the browser
// running in the relay's namespace against relayd's TCP listener: sign in
// with the token (a wrong one is refused), fail setup with an invalid port
// (the error shows next to that field), lose a race with another writer
// (412: the form reloads), change the port range and bandwidth cap, see a
// new channel come from the new range and appear live in the status view,
// and end it with its button. Screenshots go to the artifacts directory.
func TestWebPage(t *testing.T) {
	harness.RequireRoot(t)
	chromium := chromiumPath(t)
	began := time.Now()
	step := func(what string) { t.Logf("%6.2fs %s", time.Since(began).Seconds(), what) }
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute) // an upper bound: Chromium is slow on a busy machine
	defer cancel()

	lan := harness.NewLAN(t, "jnw", "relay", "caller", "callee")
	srv, err := harness.StartProsody(ctx, harness.ServerOptions{Netns: lan.NS("relay"), Admins: []string{"diradmin"},
		Users: map[string]string{user: password, "diradmin": "diradminpw"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	createDirectoryNode(ctx, t, srv, "diradmin", "diradminpw")
	w := &world{lan: lan, srv: srv, req: srv.Requester(user, password)}
	dir := t.TempDir()
	cfg := w.relayConfig()
	cfg.TURN.Builtin.Enabled = true // its allocations are shown beside the channels
	// The relay publishes to the directory node and to one that does not
	// exist (only Prosody's administrators create nodes: it fails), and
	// reads the first: the page shows both outcomes.
	cfg.Directory = config.Directory{RefreshSeconds: 60, Subscribe: []config.DirectoryNode{{Service: srv.PubsubDomain, Node: directoryNode}},
		Publish: []config.DirectoryNode{{Service: srv.PubsubDomain, Node: directoryNode}, {Service: srv.PubsubDomain, Node: "missing"}}}
	rd := startRelaydIn(t, lan.NS("relay"), dir, cfg, "-api-tcp", webAPIAddr)
	token := webRelaydUp(ctx, t, rd, dir)
	step("prosody and relayd up")

	b := startBrowser(ctx, t, chromium, lan.NS("relay"), artifactsDir(t, "web"))
	step("chromium up")
	b.run("open the page", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Navigate("http://"+webAPIAddr+"/"))
	b.waitFor("the sign-in form", `!document.getElementById('login').hidden && document.activeElement.id === 'token'`)
	b.shot("1-sign-in")

	b.run("sign in with a wrong token", chromedp.SetValue("#token", "not-the-token", chromedp.ByQuery), chromedp.Click("#login-form button", chromedp.ByQuery))
	b.waitFor("the refusal", `document.getElementById('token-err').textContent.includes('refused this token')`)
	// The first three reads of the settings fail in the network (as
	// when a phone changes networks): the page tries twice more, says so,
	// and loads them once the relay answers its status poll again.
	failed := b.failRequests("*/v1/config", 3)
	b.run("sign in", chromedp.SetValue("#token", token, chromedp.ByQuery), chromedp.Click("#login-form button", chromedp.ByQuery))
	b.waitFor("the session online in the status view", `[...document.querySelectorAll('#sessions li')].some(li =>
		li.querySelector('.name').textContent === `+jsString(srv.Kind)+` && li.querySelector('.state').textContent === 'online')`)
	b.waitFor("the load error", `document.getElementById('form-msg').textContent.includes('Trying again while the relay answers')`)
	b.waitFor("the setup form", `document.getElementById('ports-min').value === '40000' && document.getElementById('svc-domain').value === `+jsString(srv.ComponentDomain))
	if n := failed(); n != 3 {
		t.Errorf("%d reads of the settings failed, want 3", n)
	}
	if !b.eval(`document.getElementById('form-msg').hidden`) {
		t.Error("the load error is still shown after the settings loaded")
	}
	if !b.eval(`sessionStorage.getItem('jnrelay-token') === ` + jsString(token)) {
		t.Error("the token is not kept in sessionStorage")
	}
	step("signed in")

	// The directories: published to one, failing on the other (its error
	// shown), reading the first (its only item is the relay's own, not
	// counted).
	dirRow := func(kind, node string) string {
		return `document.querySelector('#directories li[data-kind="` + kind + `"][data-node="` + srv.PubsubDomain + `/` + node + `"]')`
	}
	b.waitFor("the directories in the status view", `(() => {
		const pub = `+dirRow("publish", directoryNode)+`, bad = `+dirRow("publish", "missing")+`, sub = `+dirRow("subscribe", directoryNode)+`;
		return !document.getElementById('dir-block').hidden && pub && bad && sub &&
			pub.querySelector('.state').textContent === 'published' && pub.textContent.includes('as '+`+jsString(srv.ComponentDomain)+`) &&
			bad.querySelector('.state').textContent === 'failing' && bad.querySelector('.detail.bad').textContent === 'Last error: iq set to '+`+jsString(srv.PubsubDomain)+`+': forbidden' &&
			sub.querySelector('.state').textContent === '0 relays' && sub.textContent.includes('fetched ') &&
			document.getElementById('dir-summary').textContent.startsWith('0 relays known, 0 listed to clients'); })()`)
	b.shot("1b-directories")
	step("directories shown")

	// An invalid value: the API's message appears next to that field, and
	// nothing changes.
	b.run("submit an invalid port", chromedp.SetValue("#ports-min", "80", chromedp.ByQuery), chromedp.Click("#save", chromedp.ByQuery))
	b.waitFor("the inline field error", `document.getElementById('ports-min-err').textContent !== ''`)
	var inline struct {
		Text, Invalid, Msg string
		SameField          bool
		Others             []string
	}
	b.evalInto(`(() => {
		const input = document.getElementById('ports-min'), err = document.getElementById('ports-min-err');
		return {text: err.textContent, invalid: input.getAttribute('aria-invalid'), msg: document.getElementById('form-msg').textContent,
			sameField: input.closest('.field') === err.closest('.field') && input.getAttribute('aria-describedby').split(' ').includes(err.id),
			others: [...document.querySelectorAll('#setup-form .err')].filter(e => e !== err && e.textContent).map(e => e.id + ': ' + e.textContent)};
	})()`, &inline)
	// The STUN port (3478) now falls inside the range too: that one is
	// shown next to the range's other end, the only other error allowed.
	others := strings.Join(inline.Others, "; ")
	if !strings.Contains(inline.Text, "80 is outside 1024-65535") || inline.Invalid != "true" || !inline.SameField ||
		(others != "" && others != "ports-max-err: 3478 is inside the relay port range 80-40099") || !strings.Contains(inline.Msg, "Nothing was saved") {
		t.Errorf("inline error %+v", inline)
	}
	b.shot("2-field-error")
	if cur, _, err := provision.NewStore(rd.ConfigPath).Load(); err != nil || cur.Ports.Min != 40000 {
		t.Fatalf("invalid value saved: %+v %v", cur.Ports, err)
	}
	step("invalid value refused inline")

	// Someone else changes the configuration meanwhile: the page's save is
	// refused (412), the form reloads with their change.
	api := provision.NewClient(rd.APISocket)
	defer api.Close()
	_, etag, err := api.GetConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.PatchConfig(ctx, []byte(`{"channel": {"max_kbps": 800}}`), etag); err != nil {
		t.Fatal(err)
	}
	fill := chromedp.Tasks{
		chromedp.SetValue("#ports-min", "40500", chromedp.ByQuery), chromedp.SetValue("#ports-max", "40599", chromedp.ByQuery),
		chromedp.SetValue("#max-kbps", "1500", chromedp.ByQuery), chromedp.SetValue("#monthly-quota", "2.5", chromedp.ByQuery),
		chromedp.SetValue("#total-kbps", "20000", chromedp.ByQuery),
		chromedp.Click("#save", chromedp.ByQuery),
	}
	b.run("save over a stale ETag", fill)
	b.waitFor("the changed-elsewhere message", `document.getElementById('form-msg').textContent.includes('changed elsewhere') &&
		document.getElementById('max-kbps').value === '800' && document.getElementById('ports-min').value === '40000'`)
	b.shot("3-changed-elsewhere")
	step("stale ETag reported, form reloaded")

	b.run("save the new range and cap", fill)
	b.waitFor("the confirmation", `document.getElementById('form-msg').textContent.startsWith('Saved.') && !document.getElementById('save').disabled`)
	if b.eval(`document.querySelector('#setup-form [aria-invalid]') !== null || [...document.querySelectorAll('#setup-form .err')].some(e => e.textContent)`) {
		t.Error("field errors left after a successful save")
	}
	b.shot("4-saved")
	saved, _, err := provision.NewStore(rd.ConfigPath).Load()
	if err != nil || saved.Ports.Min != 40500 || saved.Ports.Max != 40599 || saved.Channel.MaxKbps != 1500 || saved.XMPP[0].Secret != srv.Secret ||
		saved.Limits.MonthlyQuotaMB != 2500 || saved.Limits.TotalKbps != 20000 {
		t.Fatalf("saved config %+v %+v %+v %v", saved.Ports, saved.Channel, saved.Limits, err)
	}
	b.waitFor("the quota and reachability in the status view", `document.getElementById('st-month').textContent.includes('of 2.50 GB a month') &&
		document.getElementById('st-address').textContent === '203.0.113.1as configured' &&
		document.getElementById('st-reach').textContent === 'cannot tell' &&
		document.getElementById('st-reach-msg').textContent.includes('no STUN server to check with is configured. Set reachability.stun_servers')`)
	step("setup saved")

	// The account form: switching to a client account without a password
	// is refused, the error next to the password; Reload puts the saved
	// settings back.
	b.run("try an account without a password", chromedp.Click("#svc-type-client", chromedp.ByQuery),
		chromedp.SetValue("#svc-jid", "relay@localhost", chromedp.ByQuery), chromedp.Click("#save", chromedp.ByQuery))
	b.waitFor("the password error", `document.getElementById('svc-password-err').textContent.startsWith('required') &&
		document.getElementById('svc-component').hidden && document.getElementById('svc-password').getAttribute('aria-invalid') === 'true'`)
	b.shot("4b-account-error")
	b.run("reload the form", chromedp.Click("#reload", chromedp.ByQuery))
	b.waitFor("the saved settings back", `document.getElementById('form-msg').textContent.startsWith('Reloaded') &&
		document.getElementById('svc-type-component').checked && !document.getElementById('svc-component').hidden && document.getElementById('ports-min').value === '40500'`)
	if cur, _, err := provision.NewStore(rd.ConfigPath).Load(); err != nil || cur.XMPP[0].Type != "component" || cur.XMPP[0].Secret != srv.Secret {
		t.Fatalf("refused account change saved: %+v %v", cur.XMPP, err)
	}

	// The change is live: a new channel comes from the new range with the
	// new cap, and shows up in the status view.
	res := w.requestChannel(ctx, t)
	if p, _ := strconv.Atoi(res.Channel["localport"]); p < 40500 || p > 40599 || res.Channel["maxkbps"] != "1500" {
		t.Fatalf("channel after the change %+v", res.Channel)
	}
	c := w.setUpCall(ctx, t, res)
	c.exchange(ctx, t, 50)
	step("channel granted from the new range, call latched")
	row := `[...document.querySelectorAll('#channels li')].find(li => li.dataset.id === ` + jsString(c.id) + `)`
	b.waitFor("the live channel in the status view", `(() => { const li = `+row+`;
		return li && li.textContent.includes('Ports `+res.Channel["localport"]+` ↔ `+res.Channel["remoteport"]+`') && li.textContent.includes('cap 1,500 kbit/s') &&
			document.getElementById('st-channels').textContent.startsWith('1 / 2524 free') && !document.getElementById('st-out').textContent.startsWith('0 B') &&
			!document.getElementById('st-turn-row').hidden && document.getElementById('st-turn').textContent.startsWith('0 live0 since start') &&
			!document.getElementById('st-today').textContent.startsWith('0 B') && !document.getElementById('st-month').textContent.startsWith('0 B') &&
			document.getElementById('no-channels').hidden; })()`)
	step("live channel shown")
	if b.eval(`document.documentElement.scrollWidth > document.documentElement.clientWidth`) {
		t.Error("the page scrolls sideways on a phone-sized screen")
	}
	b.shot("5-live-channel")
	b.run("desktop viewport", chromedp.EmulateViewport(1280, 900))
	b.waitFor("the desktop layout", `getComputedStyle(document.getElementById('app')).gridTemplateColumns.split(' ').length === 2`)
	b.shot("6-live-channel-desktop")

	// End the call from the page: two taps.
	kill := `#channels li[data-id="` + c.id + `"] button`
	b.run("arm the end button", chromedp.Click(kill, chromedp.ByQuery))
	b.waitFor("the confirmation tap", row+`.querySelector('button').textContent === 'Tap again to end'`)
	b.run("end the channel", chromedp.Click(kill, chromedp.ByQuery))
	if _, err := rd.WaitLog(ctx, "channel ended", 1, func(r harness.LogRecord) bool { return r.Str("channel") == c.id && r.Str("reason") == "killed" }); err != nil {
		t.Fatal(err)
	}
	b.waitFor("the channel gone from the page", `!`+row+` && !document.getElementById('no-channels').hidden && document.getElementById('st-channels').textContent.startsWith('0 / 25')`)
	step("channel ended from the page")

	// A TURN allocation is listed beside the channels and ended the same
	// way (turnutils_uclient in the caller's namespace leaves one to
	// expire when done).
	secret := turnSecret(t, dir)
	user := turn.Username(time.Now().Add(time.Hour), "web")
	echo, err := lan.ListenUDP("callee", netip.AddrPortFrom(lan.Addr("callee"), 0))
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			echo.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	out, err := lan.Command(ctx, "caller", "turnutils_uclient", "-p", strconv.Itoa(cfg.TURN.Builtin.Port), "-u", user,
		"-w", turn.Password(secret, user), "-n", "2", "-l", "100", "-c", "-e", lan.Addr("callee").String(),
		"-r", strconv.Itoa(echo.LocalAddr().(*net.UDPAddr).Port), lan.Addr("relay").String()).CombinedOutput()
	alloc := listedTURN(ctx, t, api, "web@turn.invalid")
	if alloc == nil {
		t.Fatalf("no TURN allocation listed after the client (%v):\n%s", err, out)
	}
	turnRow := `document.querySelector('#channels li[data-id="` + alloc.ID + `"]')`
	b.waitFor("the TURN allocation in the status view", `(() => { const li = `+turnRow+`;
		return li && li.textContent.includes('TURN `+alloc.Relayed+`') && li.textContent.includes('web@turn.invalid from `+alloc.Client+` (udp)') &&
			document.getElementById('no-channels').hidden; })()`)
	b.shot("7-live-turn-allocation")
	b.run("arm the allocation's end button", chromedp.Click(`#channels li[data-id="`+alloc.ID+`"] button`, chromedp.ByQuery))
	b.waitFor("the confirmation tap", turnRow+`.querySelector('button').textContent === 'Tap again to end'`)
	b.run("end the allocation", chromedp.Click(`#channels li[data-id="`+alloc.ID+`"] button`, chromedp.ByQuery))
	b.waitFor("the allocation gone from the page", `!`+turnRow+` && !document.getElementById('no-channels').hidden`)
	if a := listedTURN(ctx, t, api, "web@turn.invalid"); a != nil {
		t.Fatalf("allocation still live after the page ended it: %+v", a)
	}
	step("TURN allocation shown and ended from the page")

	// What the relay has given counts the TURN allocation beside the
	// channel: two calls served today, and every byte both relayed.
	var usage daemon.Usage
	for {
		st, err := rd.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		usage = st.Usage
		relayed := st.Traffic.BytesLocalToRemote + st.Traffic.BytesRemoteToLocal
		if st.TURN != nil {
			relayed += st.TURN.BytesToPeers + st.TURN.BytesFromPeers
		}
		if usage.DayCalls == 2 && usage.DayBytes == relayed && st.TURN != nil && st.TURN.BytesFromPeers > 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("usage %+v; want 2 calls served today and %d bytes (channel %+v, TURN %+v)", usage, relayed, st.Traffic, st.TURN)
		case <-time.After(200 * time.Millisecond): // the meter samples every 2 s
		}
	}
	b.waitFor("two calls served today in the chart", `document.querySelector('#chart-days svg.calls rect.current')?.dataset.value === '2'`)
	step("the channel and the TURN allocation counted as given")
	b.checkConsole()
}

// chromiumPath is $CHROMIUM or Debian's chromium (tests/deps.sh installs it).
func chromiumPath(t *testing.T) string {
	p := os.Getenv("CHROMIUM")
	if p == "" {
		p = "/usr/bin/chromium"
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("chromium not found (%v): run tests/deps.sh or set $CHROMIUM", err)
	}
	return p
}

// artifactsDir is $JNRELAY_ARTIFACTS/name, else /tmp/jnrelay-artifacts/name:
// kept after the test (t.TempDir is not).
func artifactsDir(t *testing.T, name string) string {
	base := os.Getenv("JNRELAY_ARTIFACTS")
	if base == "" {
		base = "/tmp/jnrelay-artifacts"
	}
	dir := filepath.Join(base, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "*.png")) // a previous run's
	for _, f := range old {
		os.Remove(f)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// browser is a headless Chromium in a network namespace, driven over the
// DevTools protocol through a forwarder from the test's namespace.
type browser struct {
	t         *testing.T
	ctx       context.Context // the tab
	artifacts string
	logs      *harness.SyncBuffer // Chromium's output and chromedp's errors

	mu      sync.Mutex
	console []string // JavaScript exceptions and console/log errors
}

// devtoolsRE finds the DevTools endpoint Chromium prints on start.
var devtoolsRE = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// startBrowser starts Chromium in namespace ns with a fresh profile and
// extra flags, and connects to it; everything is torn down at the end of
// the test.
func startBrowser(ctx context.Context, t *testing.T, bin, ns, artifacts string, flags ...string) *browser {
	t.Helper()
	b := &browser{t: t, artifacts: artifacts, logs: &harness.SyncBuffer{}}
	profile := t.TempDir() // removed after Chromium is gone (cleanups run last-in first-out)
	args := append([]string{"netns", "exec", ns, bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--no-default-browser-check", "--password-store=basic", "--mute-audio", "--hide-scrollbars",
		"--user-data-dir=" + profile, "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"},
		flags...)
	cmd := exec.Command("ip", append(args, "about:blank")...)
	cmd.Env = append(os.Environ(), "HOME="+profile)
	cmd.Stdout = b.logs
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Its own process group, so its helpers go with it; SIGKILL if the
	// test dies. Pdeathsig fires when the forking thread exits, so the
	// child is forked from a locked thread that waits for it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	started, done := make(chan error, 1), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() {
		stopGroup(cmd.Process.Pid, done)
		if t.Failed() {
			t.Logf("chromium output:\n%s", b.logs.String())
		}
	})

	wsURL := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		found := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(b.logs, line)
			if m := devtoolsRE.FindStringSubmatch(line); m != nil && !found {
				found = true
				wsURL <- m[1]
			}
		}
	}()
	var endpoint string
	select {
	case endpoint = <-wsURL:
	case <-done:
		t.Fatalf("chromium exited (%v) before serving DevTools:\n%s", cmd.ProcessState, b.logs.String())
	case <-time.After(90 * time.Second): // an upper bound: Chromium starts slowly on a busy machine
		t.Fatalf("chromium did not serve DevTools within 90 s:\n%s", b.logs.String())
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	target, err := netip.ParseAddrPort(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = forwardTo(ctx, t, ns, target)

	allocCtx, cancelAlloc := chromedp.NewRemoteAllocator(ctx, u.String(), chromedp.NoModifyURL)
	logf := func(format string, args ...any) { fmt.Fprintf(b.logs, "chromedp: "+format+"\n", args...) }
	tab, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithErrorf(logf), chromedp.WithLogf(logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	chromedp.ListenTarget(tab, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *cdpruntime.EventExceptionThrown:
			msg = "exception: " + ev.ExceptionDetails.Error()
		case *cdpruntime.EventConsoleAPICalled:
			if ev.Type == cdpruntime.APITypeError || ev.Type == cdpruntime.APITypeWarning {
				msg = "console." + ev.Type.String()
			}
		case *network.EventRequestWillBeSent:
			fmt.Fprintf(b.logs, "chromium: request %s %s %s\n", ev.RequestID, ev.Request.Method, ev.Request.URL)
		case *network.EventLoadingFailed:
			// Printed with Chromium's output if the test fails: the
			// reason a fetch failed in the network (the page retries a
			// failed GET, so this alone is no error).
			fmt.Fprintf(b.logs, "chromium: request %s failed: %s (canceled %v, blocked %q)\n", ev.RequestID, ev.ErrorText, ev.Canceled, ev.BlockedReason)
		case *cdplog.EventEntryAdded:
			// Network errors are the API's 4xx answers the test provokes.
			if ev.Entry.Level == cdplog.LevelError && ev.Entry.Source != cdplog.SourceNetwork {
				msg = string(ev.Entry.Source) + ": " + ev.Entry.Text
			}
		}
		if msg != "" {
			b.mu.Lock()
			b.console = append(b.console, msg)
			b.mu.Unlock()
		}
	})
	b.ctx = tab
	// The first Run attaches the tab for the context's whole life, so it
	// gets the tab's own context (bounded by ctx), not a shorter one.
	if err := chromedp.Run(tab, cdplog.Enable(), cdpruntime.Enable()); err != nil {
		t.Fatalf("connect to chromium: %v", err)
	}
	return b
}

// stopGroup ends Chromium: SIGTERM to the browser, which closes its
// helper processes and reaps them, then SIGKILL to the whole group (after
// 10 s, or at once for anything left behind).
func stopGroup(pid int, done <-chan struct{}) {
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	syscall.Kill(-pid, syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// forwardTo listens on the test namespace's loopback and relays each
// connection to target inside namespace ns; it returns the address.
func forwardTo(ctx context.Context, t *testing.T, ns string, target netip.AddrPort) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(c ...net.Conn) {
		mu.Lock()
		conns = append(conns, c...)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := harness.DialTCPIn(ctx, ns, target)
			if err != nil {
				down.Close()
				continue
			}
			track(down, up)
			wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			go pipe(up, down)
			go pipe(down, up)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// run performs actions in the tab, failing the test with what was being
// done; each call is bounded (generously: the bound only catches a hang).
func (b *browser) run(what string, actions ...chromedp.Action) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		b.fail(fmt.Sprintf("%s: %v", what, err))
	}
}

// waitFor polls a JavaScript expression in the page (every 100 ms, at
// most 45 s: an upper bound a busy machine cannot reach) until it is true.
func (b *browser) waitFor(what, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	err := chromedp.Run(ctx, chromedp.Poll(expr, nil, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(45*time.Second)))
	if err != nil {
		b.fail(fmt.Sprintf("waiting for %s: %v", what, err))
	}
}

// eval evaluates a boolean expression.
func (b *browser) eval(expr string) bool {
	b.t.Helper()
	var ok bool
	b.evalInto(expr, &ok)
	return ok
}

func (b *browser) evalInto(expr string, res any) {
	b.t.Helper()
	b.run("evaluate "+strings.SplitN(expr, "\n", 2)[0], chromedp.Evaluate(expr, res))
}

// shot saves a PNG of the whole page as <artifacts>/<name>-<width>.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	if err := b.saveShot(name); err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
	}
}

func (b *browser) saveShot(name string) error {
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	var size struct{ W, H float64 }
	var png []byte
	err := chromedp.Run(ctx,
		chromedp.Evaluate(`({w: document.documentElement.clientWidth, h: document.documentElement.scrollHeight})`, &size),
		chromedp.ActionFunc(func(ctx context.Context) (err error) {
			png, err = page.CaptureScreenshot().WithFormat(page.CaptureScreenshotFormatPng).WithCaptureBeyondViewport(true).
				WithClip(&page.Viewport{Width: size.W, Height: math.Min(size.H, 8000), Scale: 1}).Do(ctx)
			return err
		}))
	if err != nil {
		return err
	}
	path := filepath.Join(b.artifacts, fmt.Sprintf("%s-%.0f.png", name, size.W))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return err
	}
	b.t.Logf("screenshot %s", path)
	return nil
}

// shotOf saves a PNG of the element sel as <artifacts>/<name>-<width>.png
// (width: the page's).
func (b *browser) shotOf(name, sel string) {
	b.t.Helper()
	var width float64
	var png []byte
	b.run("screenshot of "+sel, chromedp.Evaluate(`document.documentElement.clientWidth`, &width), chromedp.Screenshot(sel, &png, chromedp.ByQuery))
	path := filepath.Join(b.artifacts, fmt.Sprintf("%s-%.0f.png", name, width))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	b.t.Logf("screenshot %s", path)
}

// fail saves a screenshot of the page as it is and ends the test.
func (b *browser) fail(msg string) {
	b.t.Helper()
	if err := b.saveShot("failure"); err != nil && !errors.Is(err, context.Canceled) {
		b.t.Logf("failure screenshot: %v", err)
	}
	var state string
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	_ = chromedp.Run(ctx, chromedp.Evaluate(`document.body.innerText`, &state))
	b.t.Fatalf("%s\npage text:\n%s", msg, state)
}

// failRequests makes Chromium fail the first n requests matching pattern
// (a Fetch-domain URL pattern) as a reset connection and pass everything
// else; the returned function reports how many it failed.
func (b *browser) failRequests(pattern string, n int) func() int {
	b.t.Helper()
	var mu sync.Mutex
	count := 0
	chromedp.ListenTarget(b.ctx, func(ev any) {
		paused, ok := ev.(*fetch.EventRequestPaused)
		if !ok {
			return
		}
		mu.Lock()
		fail := count < n
		if fail {
			count++
		}
		mu.Unlock()
		// A listener must not block the event loop: answer from a goroutine.
		go func() {
			ctx := cdp.WithExecutor(b.ctx, chromedp.FromContext(b.ctx).Target)
			var err error
			if fail {
				err = fetch.FailRequest(paused.RequestID, network.ErrorReasonConnectionReset).Do(ctx)
			} else {
				err = fetch.ContinueRequest(paused.RequestID).Do(ctx)
			}
			if err != nil && b.ctx.Err() == nil {
				fmt.Fprintf(b.logs, "chromedp: answer paused request %s: %v\n", paused.RequestID, err)
			}
		}()
	})
	b.run("intercept "+pattern, fetch.Enable().WithPatterns([]*fetch.RequestPattern{{URLPattern: pattern}}))
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return count
	}
}

// checkConsole fails the test if the page threw or logged an error (a
// CSP violation shows up here too).
func (b *browser) checkConsole() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.console {
		b.t.Errorf("browser: %s", m)
	}
}

// TestWebPageClaim is a donor's first visit to a freshly flashed relay:
// the page offers to set it up, one click claims it and shows the token,
// and from then on the page asks for that token (nobody can claim it
// again).
func TestWebPageClaim(t *testing.T) {
	harness.RequireRoot(t)
	chromium := chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jnc", "relay")
	dir := t.TempDir()
	cfg := config.Default()
	cfg.PublicAddress = lan.Addr("relay").String()
	cfg.Ports = config.PortRange{Min: 40000, Max: 40099} // no XMPP service yet: a fresh device
	rd := startRelaydIn(t, lan.NS("relay"), dir, cfg, "-api-tcp", webAPIAddr)
	if _, err := rd.WaitLog(ctx, "provisioning API listening", 1, func(r harness.LogRecord) bool { return r.Str("address") == webAPIAddr }); err != nil {
		t.Fatal(err)
	}
	b := startBrowser(ctx, t, chromium, lan.NS("relay"), artifactsDir(t, "web-claim"))
	b.run("open the page", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Navigate("http://"+webAPIAddr+"/"))
	b.waitFor("the offer to set the relay up", `!document.getElementById('login').hidden && !document.getElementById('claim').hidden`)
	b.shot("1-unclaimed")
	b.run("claim", chromedp.Click("#claim-btn", chromedp.ByQuery))
	b.waitFor("the new token and the status view", `!document.getElementById('new-token').hidden && document.getElementById('new-token-value').textContent.length > 40 &&
		!document.getElementById('app').hidden && document.getElementById('sessions').textContent.includes('No XMPP service is configured')`)
	b.shot("2-claimed")
	var shown string
	b.evalInto(`document.getElementById('new-token-value').textContent`, &shown)
	raw, err := os.ReadFile(filepath.Join(dir, provision.TokenFile))
	if err != nil || strings.TrimSpace(string(raw)) != shown {
		t.Fatalf("token shown %q, token file %q %v", shown, raw, err)
	}
	if _, err := rd.WaitLog(ctx, "relay claimed through the web page; a new API token was issued", 1, nil); err != nil {
		t.Fatal(err)
	}

	// Signed out, the page asks for the token and offers no claim.
	b.run("sign out", chromedp.Click("#signout", chromedp.ByQuery))
	b.waitFor("the sign-in form without the offer", `!document.getElementById('login').hidden && document.getElementById('claim').hidden &&
		document.getElementById('new-token').hidden`)
	b.run("sign in with the kept token", chromedp.SetValue("#token", shown, chromedp.ByQuery), chromedp.Click("#login-form button", chromedp.ByQuery))
	b.waitFor("the status view", `!document.getElementById('app').hidden && document.getElementById('live').textContent.startsWith('Live')`)
	b.checkConsole()
}

// webRelaydUp waits until rd, started with -api-tcp webAPIAddr and its
// state in dir, is online and serves the page, and returns its API token.
func webRelaydUp(ctx context.Context, t *testing.T, rd *harness.Relayd, dir string) string {
	t.Helper()
	if _, err := rd.WaitLog(ctx, "xmpp component online", 1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.WaitLog(ctx, "provisioning API listening", 1, func(r harness.LogRecord) bool { return r.Str("address") == webAPIAddr }); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, provision.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(raw))
	return token
}
