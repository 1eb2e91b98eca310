package dirscale

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/jnrelay/jnrelay/relayd/directory"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// TestDirectoryScale: N simulated relays publish to a directory mirrored
// on two servers of one kind; a real relayd tracker reads both. It
// measures logins, the initial fan-in, server CPU per update (one
// subscriber, then with extra subscribers), the time until the tracker
// learns a new relay, the tracker's memory and <services/> lookup
// latency, and kills the first server: the tracker must forget nothing,
// answer the same list and keep learning new relays through the second.
func TestDirectoryScale(t *testing.T) {
	harness.RequireRoot(t)
	var runs []*run
	for _, kind := range strings.Split(*flagServers, ",") {
		r := &run{kind: kind}
		runs = append(runs, r)
		t.Run(kind, func(t *testing.T) { scale(t, r) })
	}
	if *flagOut != "" {
		if err := os.WriteFile(*flagOut, []byte(table(runs)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func startServer(kind string) (func(context.Context, harness.ServerOptions) (*harness.XMPPServer, error), error) {
	switch kind {
	case "prosody":
		return harness.StartProsody, nil
	case "ejabberd":
		return harness.StartEjabberd, nil
	}
	return nil, fmt.Errorf("unknown server kind %q (prosody, ejabberd)", kind)
}

// cpuOf is the CPU seconds of each process.
func cpuOf(pids ...int) []float64 {
	var out []float64
	for _, p := range pids {
		out = append(out, harness.ProcCPU(p))
	}
	return out
}

func scale(t *testing.T, r *run) {
	start, err := startServer(r.kind)
	if err != nil {
		t.Fatal(err)
	}
	n, fresh, updates, subs := *flagN, *flagFresh, min(*flagUpdates, *flagN), min(*flagSubs, *flagN)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()
	// Accounts: n relays, fresh ones timed before and after the kill, 2
	// barrier relays and the lookup client.
	const markers = 2
	bulk := harness.BulkUsers{Prefix: "pub", Count: n + 2*fresh + markers + 1, Password: "pubpw"}
	barrier, client := n+2*fresh, n+2*fresh+markers
	var srvs []*harness.XMPPServer
	nodeNames := []string{"relays-1", "relays-2"}
	var nodes []directory.Node
	began := time.Now()
	for i := range 2 {
		srv, err := start(ctx, harness.ServerOptions{Admins: []string{"diradmin"}, Bulk: bulk, PubsubMaxItems: bulk.Count + 100, PubsubStorage: *flagStorage,
			Users: map[string]string{"tracker": "trackerpw", "diradmin": "diradminpw"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s %d logs:\n%s", srv.Kind, i+1, srv.Logs())
			}
			srv.Close()
		})
		srvs = append(srvs, srv)
		outs, err := srv.Requester("diradmin", "diradminpw").Run(ctx, harness.RequestArgs{Relay: srv.PubsubDomain, Set: true, Raw: directory.CreateNodeXML(nodeNames[i])})
		if err != nil || len(outs) != 1 || outs[0].Type != "result" {
			t.Fatalf("create node %s: %+v %v", nodeNames[i], outs, err)
		}
		nodes = append(nodes, directory.Node{Service: jid.MustParse(srv.PubsubDomain), Node: nodeNames[i]})
	}
	r.add(t, "two servers started, accounts registered", "%.1f s for %d accounts each", time.Since(began).Seconds(), bulk.Count+2)

	tracker, trackerAddrs := startTracker(ctx, t, srvs, nodeNames)
	rssIdle, _ := harness.ProcMem(tracker.PID())

	began = time.Now()
	fl, err := connect(ctx, srvs, bulk, 0, bulk.Count)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.close()
	took := time.Since(began)
	retried, why := fl.retried()
	r.add(t, "logins (TLS + SCRAM, 16 at once)", "%d sessions in %.1f s (%.0f/s); %d retried after a refused login (%s)",
		2*bulk.Count, took.Seconds(), float64(2*bulk.Count)/took.Seconds(), retried, why)
	for i, srv := range srvs {
		rss, _ := harness.ProcMem(srv.PID())
		r.add(t, fmt.Sprintf("server %d RSS with its sessions", i+1), "%.0f MB", float64(rss)/1024)
	}

	// The initial fan-in: every relay publishes once, to both mirrors.
	want := map[string]bool{}
	pids := []int{srvs[0].PID(), srvs[1].PID(), tracker.PID()}
	cpu0 := cpuOf(pids...)
	began = time.Now()
	if err := fl.publishAll(ctx, nodes, 0, n, 0, handshakes); err != nil {
		t.Fatal(err)
	}
	published := time.Since(began)
	for _, p := range fl.pubs[:n] {
		want[p.item.JID.String()] = true
	}
	last, err := learnedAll(ctx, tracker, want)
	if err != nil {
		t.Fatal(err)
	}
	cpu1 := cpuOf(pids...)
	r.add(t, "initial publish (each relay to both mirrors, 16 at once)", "%d items in %.1f s; the tracker had learned all %.1f s after the first publish",
		n, published.Seconds(), last.Sub(began).Seconds())
	r.add(t, "server CPU per initial publish (server 1, server 2)", "%.2f ms, %.2f ms",
		1000*(cpu1[0]-cpu0[0])/float64(n), 1000*(cpu1[1]-cpu0[1])/float64(n))
	rss, hwm := harness.ProcMem(tracker.PID())
	r.add(t, "tracker RSS idle → with the directory (peak)", "%.1f MB → %.1f MB (%.1f MB); keeps ≤ %d relays", float64(rssIdle)/1024, float64(rss)/1024, float64(hwm)/1024, directory.MaxKnown)

	// Updates with the tracker as the only subscriber, then with extra
	// ones: the server's cost per update and per notification.
	marker := 0
	updateRound := func(round int) []float64 {
		t.Helper()
		c0 := cpuOf(pids...)
		if err := fl.publishAll(ctx, nodes, 0, updates, round, 8); err != nil {
			t.Fatal(err)
		}
		// A new relay after the updates: once the tracker learned it, the
		// notifications before it were out too (one node, in order).
		m := fl.pubs[barrier+marker]
		it, err := m.publish(ctx, nodes, barrier+marker, 0)
		if err != nil {
			t.Fatal(err)
		}
		marker++
		if _, err := learnedAll(ctx, tracker, map[string]bool{it.JID.String(): true}); err != nil {
			t.Fatal(err)
		}
		c1 := cpuOf(pids...)
		return []float64{c1[0] - c0[0], c1[1] - c0[1], c1[2] - c0[2]}
	}
	one := updateRound(1)
	r.add(t, "server CPU per update, 1 subscriber (server 1, server 2)", "%.2f ms, %.2f ms (%d updates)", 1000*one[0]/float64(updates), 1000*one[1]/float64(updates), updates)
	r.add(t, "tracker CPU per notification", "%.3f ms", 1000*one[2]/float64(2*updates))
	for i := range subs {
		if err := fl.pubs[i].subscribe(ctx, 0, nodes[0]); err != nil {
			t.Fatal(err)
		}
	}
	more := updateRound(2)
	perNote := (more[0] - one[0]) / float64(updates*subs)
	r.add(t, fmt.Sprintf("server 1 CPU per update, %d subscribers", 1+subs), "%.2f ms; %.3f ms per extra notification", 1000*more[0]/float64(updates), 1000*perNote)

	// New relays, one at a time: publish → the tracker learned it.
	timed := func(from int) (durations, durations) {
		t.Helper()
		var seen, rtt durations
		for i := from; i < from+fresh; i++ {
			t0 := time.Now()
			it, err := fl.pubs[i].publish(ctx, nodes, i, 0)
			if err != nil {
				t.Fatal(err)
			}
			rtt = append(rtt, time.Since(t0))
			rec, err := tracker.WaitLog(ctx, "directory: relay learned", 1, func(r harness.LogRecord) bool { return r.Str("relay") == it.JID.String() })
			if err != nil {
				t.Fatal(err)
			}
			at, err := logTime(rec)
			if err != nil {
				t.Fatal(err)
			}
			seen = append(seen, at.Sub(t0))
		}
		return seen, rtt
	}
	seen, rtt := timed(n)
	r.add(t, "new relay: publish → tracker learned it", "%s", seen)
	r.add(t, "new relay: publish round trip (both mirrors)", "%s", rtt)

	// Lookups: a client of the second server asks the tracker.
	lookupAll := func() ([]string, durations) {
		t.Helper()
		var list []string
		var d durations
		for range *flagLookups {
			l, rtt, err := lookup(ctx, fl.pubs[client].sessions[1], trackerAddrs[1])
			if err != nil {
				t.Fatal(err)
			}
			list = l
			d = append(d, rtt)
		}
		return list, d
	}
	before, d := lookupAll()
	r.add(t, "`<services/>` lookup at the tracker (through server 2)", "%s; %d entries", d, len(before))
	if len(before) != 1+min(20, n) { // the tracker itself, then the directory's relays
		t.Errorf("the tracker listed %q, want itself and %d directory relays", before, min(20, n))
	}

	// The first server dies: nothing a client sees changes.
	forgotten := tracker.Count("directory: relay forgotten", nil)
	if err := srvs[0].Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := tracker.WaitLog(ctx, "xmpp session lost, reconnecting", 1, func(r harness.LogRecord) bool { return r.Str("session") == "t1" }); err != nil {
		t.Fatal(err)
	}
	after, d := lookupAll()
	r.add(t, "lookup with server 1 killed", "%s", d)
	if !slices.Equal(before, after) {
		t.Errorf("with server 1 dead the tracker lists %q, before %q", after, before)
	}
	// Sessions to the dead server are seen offline once their
	// connections broke: publish skips them.
	seen, _ = timed(n + fresh)
	r.add(t, "new relay with server 1 killed: publish → learned", "%s", seen)
	if n := tracker.Count("directory: relay forgotten", nil); n != forgotten {
		t.Errorf("the tracker forgot %d relays after server 1 was killed", n-forgotten)
	}
	r.add(t, "relays forgotten by the tracker after the kill", "%d", tracker.Count("directory: relay forgotten", nil)-forgotten)
}
