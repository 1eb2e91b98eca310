package admission

import (
	"errors"
	"testing"
	"time"

	"mellium.im/xmpp/jid"
)

func check(g *Gate, from string) error { return g.Check(Request{Requester: jid.MustParse(from)}) }

// Check gives the refusal Reserve would give, for each limit, and takes
// nothing: no reservation, no request counted against the rate, no entry
// in the requester table.
func TestCheckAgreesWithReserveAndTakesNothing(t *testing.T) {
	var quota error
	g, clock := newTestGate(Limits{MaxChannels: 3, RequesterChannels: 1, DomainChannels: 2, RequesterRequestsPerMinute: 2})
	g.cfg.Quota = func() error { return quota }

	// Checked many times, a fresh requester stays admitted and untracked.
	for range 10 {
		if err := check(g, "alice@a.example/x"); err != nil {
			t.Fatalf("fresh requester: %v", err)
		}
	}
	if jids, _ := g.requesters.tracked(); jids != 0 || g.Held() != 0 {
		t.Fatalf("Check tracked %d requesters, holds %d", jids, g.Held())
	}

	// Each limit reached: Check's refusal is Reserve's.
	agree := func(from string, want Reason) {
		t.Helper()
		checked := check(g, from)
		if checked == nil || refusedFor(t, checked) != want {
			t.Fatalf("Check(%s) = %v, want %s", from, checked, want)
		}
		_, reserved := reserve(g, from)
		if reserved == nil || checked.Error() != reserved.Error() {
			t.Fatalf("Check(%s) = %v, Reserve = %v", from, checked, reserved)
		}
	}
	if _, err := reserve(g, "alice@a.example/x"); err != nil {
		t.Fatal(err)
	}
	agree("alice@a.example/y", RequesterChannels) // spends alice's second request of the minute
	agree("alice@a.example/y", RequesterRate)     // rate first: no request left this minute
	if _, err := reserve(g, "bob@a.example/x"); err != nil {
		t.Fatal(err)
	}
	agree("carol@a.example/x", DomainShare)
	if _, err := reserve(g, "dave@d.example/x"); err != nil {
		t.Fatal(err)
	}
	agree("erin@e.example/x", RelayFull)
	quota = errors.New("data quota used up")
	agree("erin@e.example/x", QuotaExhausted)
	quota = nil

	// A refused Check spends no rate: after a minute alice has her two
	// requests back, whatever she checked meanwhile.
	clock.Set(clock.Now().Add(time.Minute))
	for range 5 {
		check(g, "alice@a.example/z")
	}
	g.SetLimits(Limits{RequesterRequestsPerMinute: 2})
	for i := range 2 {
		if _, err := reserve(g, "alice@a.example/z"); err != nil {
			t.Fatalf("request %d after checks: %v", i, err)
		}
	}
	if err := check(g, "alice@a.example/z"); refusedFor(t, err) != RequesterRate {
		t.Fatalf("Check after the rate is spent: %v", err)
	}
	if g.Held() != 5 {
		t.Fatalf("%d held, want the 5 reserved", g.Held())
	}
}
