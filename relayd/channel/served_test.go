package channel

import (
	"testing"
	"time"
)

// A channel counts as served once it relayed a datagram each way, and
// stays counted after it ends; a channel only one side used (the call
// found a direct path) is not counted.
func TestServedCounts(t *testing.T) {
	m, ends := newTestManager(t, nil)
	oneWay, err := m.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	a := newParty(t)
	a.send(oneWay.LocalPort, []byte("hello?"))
	waitLatched(t, m, oneWay.ID, 0, 0)
	if n := m.Totals().Served; n != 0 {
		t.Fatalf("served %d before any datagram was relayed", n)
	}
	info, _, _, _, _ := call(t, m)
	if n := m.Totals().Served; n != 1 {
		t.Fatalf("served %d with one call relaying both ways, want 1", n)
	}
	for _, id := range []string{info.ID, oneWay.ID} {
		if !m.Kill(id) {
			t.Fatalf("kill %s", id)
		}
		select {
		case <-ends:
		case <-time.After(10 * time.Second):
			t.Fatalf("channel %s did not end", id)
		}
	}
	if tot := m.Totals(); tot.Served != 1 || tot.Active != 0 {
		t.Fatalf("after both ended: served %d, active %d; want 1, 0", tot.Served, tot.Active)
	}
}
