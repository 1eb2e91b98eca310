package directory

import (
	"context"
	"testing"
)

// The publisher's status follows its directory: waiting with no session,
// failing with the service's error, published with the address and time,
// unlisted while draining, withdrawn after a clean stop.
func TestPublisherStatus(t *testing.T) {
	f := newFake(t, "relay.example.org")
	f.noCreate = true // no node, and no right to create it: failing
	listed, free := true, 10
	online := false
	p := testPublisher(f, &listed, &free)
	p.cfg.Session = func(Node) Requester {
		if online {
			return f
		}
		return nil
	}
	ctx := context.Background()
	state := func(want string) PublishStatus {
		t.Helper()
		st := p.Status()
		if len(st) != 1 || st[0].Node != "pubsub.example.org/"+testNode || st[0].State != want {
			t.Fatalf("status %+v, want state %s", st, want)
		}
		return st[0]
	}
	p.step(ctx)
	if st := state(StateWaiting); !st.LastAttempt.IsZero() || st.Error != "" {
		t.Errorf("waiting: %+v", st)
	}
	online = true
	p.step(ctx)
	if st := state(StateFailing); st.LastAttempt.IsZero() || st.Error == "" || !st.LastPublished.IsZero() {
		t.Errorf("failing: %+v", st)
	}
	f.noCreate = false
	p.step(ctx)
	if st := state(StatePublished); st.Error != "" || st.Address != "relay.example.org" || st.LastPublished.IsZero() {
		t.Errorf("published: %+v", st)
	}
	listed = false
	p.step(ctx)
	state(StateUnlisted)
	p.Withdraw(ctx)
	state(StateWithdrawn)
}

// The reader's status counts each node's relays (a mirrored relay in
// each), the relays kept, the trackers known and this reader's share.
func TestReaderStatus(t *testing.T) {
	c := &clock{now: testNow}
	f := newFake(t, "tracker@example.org/t", "n1", "n2")
	tr := relayItem("other.example.org", 2, testNow)
	tr.Tracker = true
	for _, n := range []string{"n1", "n2"} {
		f.put(n, "a.example.org", "a.example.org", relayItem("a.example.org", 2, testNow))
	}
	f.put("n1", "other.example.org", "other.example.org", tr)
	r := testReader(f, c, "n1", "n2", "n3") // n3 does not exist
	r.step(context.Background())
	st := r.Status(Near{}, 1)
	if len(st.Nodes) != 3 || st.Relays != 2 || st.Trackers != 1 || st.ProbeShare != 2 || st.ProbeFailing != 0 || st.Listed != 1 {
		t.Fatalf("status %+v", st)
	}
	for i, want := range []int{2, 1, 0} {
		n := st.Nodes[i]
		if n.Relays != want {
			t.Errorf("node %s: %d relays, want %d", n.Node, n.Relays, want)
		}
		if fetched := n.Error == ""; fetched != (want > 0) || fetched == n.LastFetch.IsZero() || fetched != (n.SubscribedAs == "tracker@example.org/t") {
			t.Errorf("node %s: %+v", n.Node, n)
		}
	}
}
