package directory

import (
	"fmt"
	"testing"
)

// 100 trackers and 1,000 relays: every relay is probed by exactly
// DefaultProbers trackers (none by all of them), and the work is spread:
// every tracker has a share, none more than twice the mean.
func TestShareSpreadsProbes(t *testing.T) {
	const nTrackers, nRelays = 100, 1000
	var trackers []string
	for i := range nTrackers {
		trackers = append(trackers, fmt.Sprintf("tracker%d@example.org/r", i))
	}
	load := map[string]int{}
	for j := range nRelays {
		relay := fmt.Sprintf("relay%d.example.org", j)
		probers := 0
		for _, tr := range trackers {
			if inShare(tr, trackers, relay, DefaultProbers) {
				probers++
				load[tr]++
			}
		}
		if probers != DefaultProbers {
			t.Fatalf("%s is probed by %d trackers, want %d", relay, probers, DefaultProbers)
		}
	}
	mean := nRelays * DefaultProbers / nTrackers
	for _, tr := range trackers {
		if load[tr] == 0 || load[tr] > 2*mean {
			t.Errorf("%s probes %d relays (mean %d)", tr, load[tr], mean)
		}
	}
}

// A tracker that is also a relay of the directory is never its own
// prober, and with fewer trackers than DefaultProbers each probes all.
func TestShareSmallAndSelf(t *testing.T) {
	trackers := []string{"a.example.org", "b.example.org"}
	for _, tr := range trackers {
		if !inShare(tr, trackers, "r.example.org", DefaultProbers) {
			t.Errorf("%s does not probe r with two trackers", tr)
		}
		if inShare(tr, trackers, tr, DefaultProbers) {
			t.Errorf("%s probes itself", tr)
		}
	}
	// A tracker that has not seen the others counts itself alone.
	if !inShare("c.example.org", nil, "r.example.org", 1) {
		t.Error("a lone tracker does not probe")
	}
}

// A tracker joining moves only its own share: every relay keeps all but
// at most one of its probers.
func TestShareStableWhenATrackerJoins(t *testing.T) {
	var trackers []string
	for i := range 20 {
		trackers = append(trackers, fmt.Sprintf("t%d.example.org", i))
	}
	joined := append(append([]string(nil), trackers...), "new.example.org")
	for j := range 200 {
		relay := fmt.Sprintf("relay%d.example.org", j)
		kept := 0
		for _, tr := range trackers {
			if inShare(tr, trackers, relay, DefaultProbers) && inShare(tr, joined, relay, DefaultProbers) {
				kept++
			}
		}
		if kept < DefaultProbers-1 {
			t.Errorf("%s kept %d of its probers", relay, kept)
		}
	}
}

// BenchmarkDueProbes is one reader's choice of probes in a directory of
// 1,000 relays, 100 of them trackers, its share view unchanged (the
// steady state: every 5 s).
func BenchmarkDueProbes(b *testing.B) {
	f := newFake(b, "tracker@example.org/t", testNode)
	r := testReader(f, &clock{now: testNow}, testNode)
	var entries []Entry
	for i := range 1000 {
		it := relayItem(fmt.Sprintf("relay%d.example.org", i), 1, testNow)
		it.Tracker = i < 100
		entries = append(entries, Entry{ID: it.JID.String(), Publisher: it.JID.String(), Item: it})
	}
	r.apply(r.cfg.Nodes[0], entries)
	for b.Loop() {
		r.dueProbes()
	}
}
