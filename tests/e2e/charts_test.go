package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/jnrelay/jnrelay/tests/harness"
)

// TestWebPageCharts is what the donor page shows of what the relay has
// given, with data fed through real traffic: a relay whose usage.json is
// still in the format of the releases before the history (version 1,
// yesterday's 2.5 MB) relays a call; in headless Chromium at phone
// (360×740) and desktop (1280×800) widths the page draws today's bar of
// data exactly as many bytes as the call's endpoints received through
// the relay, one call served today, yesterday's 2.5 MB, and the call in
// the last hour's chart (live since its channel was granted). Screenshots go to the artifacts
// directory (charts/).
func TestWebPageCharts(t *testing.T) {
	harness.RequireRoot(t)
	chromium := chromiumPath(t)
	began := time.Now()
	step := func(what string) { t.Logf("%6.2fs %s", time.Since(began).Seconds(), what) }
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // an upper bound: Chromium is slow on a busy machine
	defer cancel()

	lan := harness.NewLAN(t, "jnh", "relay", "caller", "callee")
	srv, err := harness.StartProsody(ctx, harness.ServerOptions{Netns: lan.NS("relay"), Users: map[string]string{user: password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	w := &world{lan: lan, srv: srv, req: srv.Requester(user, password)}
	dir := t.TempDir()
	// The usage counts of an earlier release (no version, no history):
	// yesterday's day becomes yesterday's bar.
	yesterday := time.Now().AddDate(0, 0, -1)
	v1 := fmt.Sprintf(`{"day":%q,"day_bytes":2500000,"month":%q,"month_bytes":42500000}`, yesterday.Format("2006-01-02"), yesterday.Format("2006-01"))
	if err := os.WriteFile(filepath.Join(dir, "usage.json"), []byte(v1), 0o640); err != nil {
		t.Fatal(err)
	}
	rd := startRelaydIn(t, lan.NS("relay"), dir, w.relayConfig(), "-api-tcp", webAPIAddr)
	w.rd = rd
	token := webRelaydUp(ctx, t, rd, dir)
	step("prosody and relayd up")

	c := w.setUpCall(ctx, t, w.requestChannel(ctx, t))
	c.exchange(ctx, t, 200)
	// Everything the endpoints received came through the relay: that is
	// what it relayed.
	received := 0
	for _, e := range []*harness.Endpoint{c.caller, c.callee} {
		for _, st := range []harness.Stats{e.RTPStats(), e.RTCPStats()} {
			received += st.Bytes
		}
	}
	if received < 4*200*28 {
		t.Fatalf("the endpoints received %d bytes for 4 × 200 packets", received)
	}
	step(fmt.Sprintf("call relayed %d bytes", received))

	b := startBrowser(ctx, t, chromium, lan.NS("relay"), artifactsDir(t, "charts"))
	b.run("open the page on a phone", chromedp.EmulateViewport(360, 740, chromedp.EmulateMobile), chromedp.Navigate("http://"+webAPIAddr+"/"))
	b.waitFor("the sign-in form", `!document.getElementById('login').hidden`)
	b.run("sign in", chromedp.SetValue("#token", token, chromedp.ByQuery), chromedp.Click("#login-form button", chromedp.ByQuery))
	today := `document.querySelector('#chart-days svg.bytes rect.current')`
	b.waitFor("today's bar of data", today+` && `+today+`.dataset.value === `+jsString(strconv.Itoa(received)))
	step("today's bar drawn")

	var got struct {
		Calls, Yesterday, Live      string
		Days, Months, Rows, Minutes int
		Titled                      bool
		Summary                     string
	}
	b.evalInto(`(() => {
		const bars = (sel) => [...document.querySelectorAll(sel + ' rect')];
		const days = bars('#chart-days svg.bytes');
		return {
			calls: document.querySelector('#chart-days svg.calls rect.current')?.dataset.value || '',
			yesterday: days.find(r => r.dataset.key === `+jsString(yesterday.Format("2006-01-02"))+`)?.dataset.value || '',
			live: String(Math.max(0, ...bars('#chart-live svg').map(r => Number(r.dataset.value)))),
			days: days.length, months: bars('#chart-months svg.bytes').length,
			rows: document.querySelectorAll('#chart-days table tbody tr').length,
			minutes: document.querySelectorAll('#chart-live table tbody tr').length,
			titled: [...document.querySelectorAll('#given svg')].every(s => s.querySelector('title')?.textContent && s.querySelector('desc')?.textContent &&
				s.getAttribute('role') === 'img'),
			summary: document.getElementById('given-summary').textContent,
		};
	})()`, &got)
	// Yesterday's month is this month or the last one: either way both
	// months have bars.
	if got.Calls != "1" || got.Yesterday != "2500000" || got.Live != "1" || got.Days != 2 || got.Months < 1 || got.Months > 2 ||
		got.Rows != 31 || got.Minutes < 1 || !got.Titled || !strings.Contains(got.Summary, "1 call served") {
		t.Errorf("charts %+v; want today 1 call, yesterday 2500000 bytes, 1 live call, bars for 2 days, tables of 31 days", got)
	}
	if b.eval(`document.documentElement.scrollWidth > document.documentElement.clientWidth ||
		[...document.querySelectorAll('#given svg')].some(s => s.getBoundingClientRect().right > document.documentElement.clientWidth)`) {
		t.Error("the charts scroll sideways on a 360 px phone")
	}
	b.run("scroll to the charts", chromedp.ScrollIntoView("#given", chromedp.ByQuery))
	b.shot("1-phone")
	b.shotOf("1-phone-charts", "#given")
	// The dark theme's colours apply to the charts too.
	b.run("dark theme", emulation.SetEmulatedMedia().WithFeatures([]*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}))
	b.waitFor("the dark theme", `getComputedStyle(document.body).backgroundColor === 'rgb(17, 24, 39)'`)
	b.shotOf("1-phone-charts-dark", "#given")
	b.run("light theme", emulation.SetEmulatedMedia().WithFeatures([]*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "light"}}))

	b.run("desktop viewport", chromedp.EmulateViewport(1280, 800))
	b.waitFor("the charts redrawn at desktop width", `document.querySelector('#chart-days svg.bytes').width.baseVal.value > 500 && `+
		today+`.dataset.value === `+jsString(strconv.Itoa(received)))
	// The figures behind a chart, as a table.
	b.run("open the months' figures", chromedp.Click("#chart-months summary", chromedp.ByQuery))
	b.waitFor("the months' table", `document.querySelector('#chart-months details').open &&
		document.querySelectorAll('#chart-months table tbody tr').length === 13`)
	b.shot("2-desktop")
	b.shotOf("2-desktop-charts", "#given")
	step("screenshots taken")
	b.checkConsole()
}
