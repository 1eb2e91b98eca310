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
// one (docs/ARCHITECTURE.md, "Race for a latch"): whichever the relay
// processes first latches the port; the other source is dropped and
// counted while the winner is active, receives nothing, and takes the port
// over only after the winner has been silent for the grace period.
func TestLatchRace(t *testing.T) {
	const grace = 300 * time.Millisecond
	m, _ := newTestManager(t, func(c *Config) { c.PortMin, c.PortMax = 27800, 27803; c.LatchGrace = grace })
	info, err := m.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	p := info.LocalPort
	spoofer, legit, callee := newParty(t), newParty(t), newParty(t)
	spoofer.send(p, []byte("first")) // wins the race: nobody on P+2 yet, dropped but latched
	legit.send(p, []byte("second"))  // loses: foreign source
	callee.send(p+2, []byte("hello"))
	spoofer.expect([]byte("hello"), p) // the callee's media goes to the winner
	legit.send(p, []byte("still-second"))
	callee.send(p+2, []byte("again"))
	spoofer.expect([]byte("again"), p)
	s := liveStats(t, m, info.ID)
	if s.Dropped[DropForeignSource] != 2 || s.Relatched != 0 {
		t.Fatalf("after the race: foreign drops %d (want 2), relatched %d", s.Dropped[DropForeignSource], s.Relatched)
	}
	// The winner falls silent for longer than the grace: the next datagram
	// from the other source takes the port.
	time.Sleep(grace + 100*time.Millisecond) // the rule is about elapsed silence: nothing to await
	legit.send(p, []byte("taking-over"))
	callee.expect([]byte("taking-over"), p+2)
	callee.send(p+2, []byte("to-legit"))
	legit.expect([]byte("to-legit"), p)
	if s := liveStats(t, m, info.ID); s.Relatched != 1 {
		t.Fatalf("relatched %d, want 1", s.Relatched)
	}
}
