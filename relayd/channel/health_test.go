package channel

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestDrainKeepsCallsAndRefusesNewOnes(t *testing.T) {
	m, ends := newTestManager(t, func(c *Config) { c.PortMin, c.PortMax = 27500, 27507 })
	info, a, b, _, _ := call(t, m)
	m.Drain()
	if !m.Draining() {
		t.Fatal("Draining() = false after Drain")
	}
	if _, err := m.Allocate(); !errors.Is(err, ErrDraining) {
		t.Fatalf("Allocate while draining: %v, want ErrDraining", err)
	}
	// The live call is untouched.
	for i := range 10 {
		msg := fmt.Appendf(nil, "drain-%d", i)
		a.send(info.LocalPort, msg)
		b.expect(msg, info.LocalPort+2)
		b.send(info.LocalPort+2, msg)
		a.expect(msg, info.LocalPort)
	}
	if n := len(m.Channels()); n != 1 {
		t.Fatalf("%d live channels while draining, want 1", n)
	}
	if !m.Kill(info.ID) {
		t.Fatal("channel gone")
	}
	if e := <-ends; e.Info.ID != info.ID || e.Reason != EndKilled {
		t.Fatalf("end %+v", e)
	}
}

func TestCheckPassesWhileServingAndFailsWhenWedged(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) { c.PortMin, c.PortMax = 27600, 27607; c.Workers = 2 })
	info, a, b, _, _ := call(t, m)
	for range 3 { // repeated probes each get their own answer
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := m.Check(ctx)
		cancel()
		if err != nil {
			t.Fatalf("healthy data plane failed the check: %v", err)
		}
	}
	a.send(info.LocalPort, []byte("before"))
	b.expect([]byte("before"), info.LocalPort+2)

	m.Wedge()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := m.Check(ctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wedged data plane passed the check: %v", err)
	}
	t.Logf("check on a wedged data plane: %v", err)
	// Close releases the wedged workers (the test's cleanup would hang
	// otherwise); a check after that reports the stop.
	m.Close()
	if err := m.Check(context.Background()); err == nil {
		t.Fatal("check passed after Close")
	}
}

// TestTotalCapSharedByChannels: a relay-wide cap of 160 kbit/s (20,000
// bytes/s, burst 10,000 bytes) shared by two calls; a burst of 60 × 500
// bytes through them passes about the burst and drops the rest as
// rate_limited, and lifting the cap live lets everything through.
func TestTotalCapSharedByChannels(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) { c.PortMin, c.PortMax = 27700, 27707; c.TotalKbps = 160 })
	infoA, a1, a2, _, _ := call(t, m)
	infoB, b1, b2, _, _ := call(t, m)
	payload := make([]byte, 500)
	for range 30 {
		a1.send(infoA.LocalPort, payload)
		b1.send(infoB.LocalPort, payload)
	}
	got := countArrivals(a2, 30, 300*time.Millisecond) + countArrivals(b2, 30, 300*time.Millisecond)
	tot := m.Totals().Stats
	if got < 15 || got > 35 || tot.Dropped[DropRateLimited] == 0 || uint64(got)+tot.Dropped[DropRateLimited] != 60 {
		t.Fatalf("%d of 60 through a shared 160 kbit/s cap, %d dropped as rate_limited", got, tot.Dropped[DropRateLimited])
	}
	if err := m.Reconfigure(Settings{PortMin: 27700, PortMax: 27707, Expire: time.Minute, LatchGrace: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	for range 30 {
		a1.send(infoA.LocalPort, payload)
	}
	if n := countArrivals(a2, 30, 2*time.Second); n != 30 {
		t.Fatalf("%d of 30 after lifting the cap", n)
	}
}

// countArrivals reads up to want datagrams, giving up after quiet without
// one (the rest were dropped: there is no event for that).
func countArrivals(p *party, want int, quiet time.Duration) int {
	buf := make([]byte, 2048)
	n := 0
	for n < want {
		p.conn.SetReadDeadline(time.Now().Add(quiet))
		if _, _, err := p.conn.ReadFromUDPAddrPort(buf); err != nil {
			break
		}
		n++
	}
	return n
}

// TestLatchRace states the rule for a datagram racing the legitimate first
// one (latch.go): whichever the relay processes first latches the port,
// but only tentatively. Toward a tentative side the relay sends at most
// probeBudget datagrams; the legitimate party, which carries the call,
// takes the port once it has sent confirmAfter datagrams and more than
// twice as many as the winner of the race over the same streak. The
// spoofer never gets more than the budget.
func TestLatchRace(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) { c.PortMin, c.PortMax = 27800, 27803 })
	info, err := m.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	p := info.LocalPort
	spoofer, legit, callee := newParty(t), newParty(t), newParty(t)
	spoofer.send(p, []byte("first")) // wins the race: nobody on P+2 yet, dropped but latched
	waitLatched(t, m, info.ID, 0, 0)
	callee.send(p+2, []byte("hello"))
	spoofer.expect([]byte("hello"), p) // the probe budget: the winner gets the first datagrams
	callee.send(p+2, []byte("again"))
	spoofer.expect([]byte("again"), p)
	callee.send(p+2, []byte("not-for-the-spoofer")) // budget spent
	// The legitimate party sends its media: the first confirmAfter-1 are
	// foreign, the confirmAfter-th takes the port and is forwarded.
	for i := range confirmAfter {
		legit.send(p, fmt.Appendf(nil, "media-%d", i))
	}
	callee.expect(fmt.Appendf(nil, "media-%d", confirmAfter-1), p+2)
	callee.send(p+2, []byte("to-legit"))
	legit.expect([]byte("to-legit"), p)
	s := liveStats(t, m, info.ID)
	if s.Relatched != 1 || s.Dropped[DropForeignSource] != confirmAfter-1 || s.Dropped[DropUnconfirmedPeer] != 1 {
		t.Fatalf("relatched %d (want 1), foreign drops %d (want %d), unconfirmed-peer drops %d (want 1)",
			s.Relatched, s.Dropped[DropForeignSource], confirmAfter-1, s.Dropped[DropUnconfirmedPeer])
	}
	if n := countArrivals(spoofer, 10, 100*time.Millisecond); n != 0 {
		t.Fatalf("the spoofer received %d more datagrams after its budget", n)
	}
}
