package admission

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"mellium.im/xmpp/jid"
)

// refusedFor returns err's reason, failing the test when err is not a
// *Refusal.
func refusedFor(t *testing.T, err error) Reason {
	t.Helper()
	r, ok := errors.AsType[*Refusal](err)
	if !ok {
		t.Fatalf("want a *Refusal, got %v", err)
	}
	return r.Reason
}

// The last slot of max_channels goes to exactly one of many concurrent
// requests: the check and the count are one step, and a reservation
// counts before its channel is allocated.
func TestMaxChannelsConcurrent(t *testing.T) {
	const limit = 10
	g := New(Config{})
	g.SetLimits(Limits{MaxChannels: limit})
	var admitted, full atomic.Int32
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			for j := range 4 { // every requester of its own domain: only max_channels binds
				_, err := reserve(g, fmt.Sprintf("u%d@d%d-%d.example", i, i, j))
				if err == nil {
					admitted.Add(1)
				} else if r, ok := errors.AsType[*Refusal](err); ok && r.Reason == RelayFull {
					full.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n, f := admitted.Load(), full.Load(); n != limit || f != 64*4-limit {
		t.Fatalf("%d reserved and %d refused as full concurrently, max_channels is %d", n, f, limit)
	}
	if g.Held() != limit {
		t.Fatalf("%d held, want %d", g.Held(), limit)
	}
	if err := g.RelayWide(); refusedFor(t, err) != RelayFull || err.Error() != "the relay carries its maximum of 10 calls" {
		t.Fatalf("relay-wide refusal of a full relay: %v", err)
	}
}

func TestReleaseOnEndAndCancel(t *testing.T) {
	g := New(Config{})
	g.SetLimits(Limits{MaxChannels: 1})
	ticket, err := reserve(g, "alice@example.net/a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reserve(g, "bob@example.org/b"); refusedFor(t, err) != RelayFull {
		t.Fatalf("second channel of a one-channel relay: %v", err)
	}
	// The allocation fails: the slot comes back.
	ticket.Cancel()
	ticket.Cancel() // once only
	if g.Held() != 0 {
		t.Fatalf("%d held after cancel", g.Held())
	}
	ticket, err = reserve(g, "bob@example.org/b")
	if err != nil {
		t.Fatalf("after cancel: %v", err)
	}
	ticket.Commit("ch1")
	ticket.Cancel() // after Commit: does nothing, so it can be deferred
	if g.Held() != 1 || ticket.Channel() != "ch1" {
		t.Fatalf("a committed channel was given back by Cancel: held %d, channel %q", g.Held(), ticket.Channel())
	}
	// The channel ends.
	ticket.Release()
	ticket.Release() // once only
	if g.Held() != 0 {
		t.Fatalf("%d held after the channel ended", g.Held())
	}
	if _, err := reserve(g, "carol@example.com/c"); err != nil {
		t.Fatalf("after the channel ended: %v", err)
	}
}

func TestQuotaAndDrainingRefuseEveryone(t *testing.T) {
	var quota error
	var draining bool
	g := New(Config{Quota: func() error { return quota }, Draining: func() bool { return draining }})
	g.SetLimits(Limits{RequesterRequestsPerMinute: 1})
	if err := g.RelayWide(); err != nil {
		t.Fatalf("within limits: %v", err)
	}
	quota = errors.New("data quota used up: the daily quota of 1 GB is used up until midnight")
	_, err := reserve(g, "alice@example.net/a")
	if refusedFor(t, err) != QuotaExhausted || err.Error() != quota.Error() {
		t.Fatalf("over the quota: %v", err)
	}
	if err := g.RelayWide(); refusedFor(t, err) != QuotaExhausted {
		t.Fatalf("relay-wide over the quota: %v", err)
	}
	draining = true
	if _, err := reserve(g, "alice@example.net/a"); refusedFor(t, err) != Draining || err.Error() != "relay is shutting down" {
		t.Fatalf("draining: %v", err)
	}
	quota, draining = nil, false
	// Refused relay-wide, the requester's one request a minute was not
	// spent, and nothing is held.
	if _, err := reserve(g, "alice@example.net/a"); err != nil {
		t.Fatalf("back within limits: %v", err)
	}
	if g.Held() != 1 {
		t.Fatalf("%d held, want 1", g.Held())
	}
}

func TestPolicyIsAskedFirst(t *testing.T) {
	quota := errors.New("data quota used up")
	g := New(Config{Quota: func() error { return quota }})
	roster := NewRoster()
	roster.Replace([]RosterItem{{JID: jid.MustParse("friend@example.org"), Subscription: "both"}})
	deny := []jid.JID{jid.MustParse("troll@example.net")}
	for _, c := range []struct {
		policy *Policy
		from   string
		want   Reason
		text   string
	}{
		{&Policy{Deny: deny}, "troll@example.net/x", Denied, "requester is on the relay's deny list"},
		{&Policy{RosterOnly: true, Roster: roster}, "stranger@example.org/x", Denied, "this relay serves its owner's contacts only"},
		{&Policy{RosterOnly: true, Roster: roster}, "friend@example.org/x", QuotaExhausted, "data quota used up"},
		{nil, "anyone@example.org/x", QuotaExhausted, "data quota used up"},
	} {
		_, err := g.Reserve(Request{Requester: jid.MustParse(c.from), Policy: c.policy})
		if refusedFor(t, err) != c.want || err.Error() != c.text {
			t.Errorf("%s: %v, want %s %q", c.from, err, c.want, c.text)
		}
	}
	if g.Held() != 0 {
		t.Fatalf("refused requests hold %d", g.Held())
	}
}

// Lowering a limit keeps what is held and refuses until it is below.
func TestLowerLimitKeepsHeld(t *testing.T) {
	g := New(Config{})
	a, _ := reserve(g, "a@one.example")
	if _, err := reserve(g, "b@two.example"); err != nil {
		t.Fatal(err)
	}
	g.SetLimits(Limits{MaxChannels: 1})
	if g.Held() != 2 {
		t.Fatalf("%d held after lowering max_channels, want 2", g.Held())
	}
	if _, err := reserve(g, "c@three.example"); refusedFor(t, err) != RelayFull {
		t.Fatalf("over a lowered limit: %v", err)
	}
	a.Cancel()
	if _, err := reserve(g, "c@three.example"); refusedFor(t, err) != RelayFull {
		t.Fatalf("at a lowered limit: %v", err)
	}
}

func TestReasonNames(t *testing.T) {
	for r := Denied; r <= DomainShare; r++ {
		if r.String() == "unknown" || r.String() == "" {
			t.Errorf("reason %d has no name", r)
		}
	}
	if Reason(0).String() != "unknown" || Reason(99).String() != "unknown" {
		t.Error("out-of-range reasons named")
	}
	relayWide := map[Reason]bool{Draining: true, QuotaExhausted: true, RelayFull: true}
	for r := Denied; r <= DomainShare; r++ {
		if r.RelayWide() != relayWide[r] {
			t.Errorf("%s: RelayWide %v", r, r.RelayWide())
		}
	}
}
