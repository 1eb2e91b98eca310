package channel

import (
	"fmt"
	"testing"
	"time"
)

// TestLoneDatagramNeverTakesQuietSide: after the latched party has been
// silent for longer than the grace (a call on hold, a long RTCP interval),
// one datagram from anyone is still dropped; the call goes on to the
// latched party when it speaks again.
func TestLoneDatagramNeverTakesQuietSide(t *testing.T) {
	const grace = 50 * time.Millisecond
	m, _ := newTestManager(t, func(c *Config) { c.LatchGrace = grace })
	info, a, b, _, _ := call(t, m)
	p := info.LocalPort
	time.Sleep(3 * grace) // the rule is about elapsed silence: nothing to await
	intruder := newParty(t)
	intruder.send(p+2, []byte("take-over?"))
	a.send(p, []byte("for-b"))
	b.expect([]byte("for-b"), p+2)
	s := liveStats(t, m, info.ID)
	if s.Relatched != 0 || s.Dropped[DropForeignSource] != 1 {
		t.Fatalf("relatched %d (want 0), foreign drops %d (want 1)", s.Relatched, s.Dropped[DropForeignSource])
	}
	if n := countArrivals(intruder, 1, 50*time.Millisecond); n != 0 {
		t.Fatal("the intruder received the call")
	}
}

// TestSprayerBlocked: one address refused on DefaultSprayThreshold
// channels is blocked — its datagrams are counted as sprayer drops, its
// tentative latches are vacated for the real parties, and it receives
// nothing more.
func TestSprayerBlocked(t *testing.T) {
	m, _ := newTestManager(t, nil)
	sprayer := newPartyAt(t, "127.0.0.3")
	var infos []Info
	var parties [][2]*party
	for range DefaultSprayThreshold {
		info, a, b, _, _ := call(t, m)
		infos = append(infos, info)
		parties = append(parties, [2]*party{a, b})
	}
	fresh, err := m.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	// The sprayer latches the fresh channel's requester port first...
	sprayer.send(fresh.LocalPort, []byte("spray"))
	waitLatched(t, m, fresh.ID, 0, 0)
	// ...and hits every busy channel, where it is foreign.
	for _, info := range infos {
		sprayer.send(info.LocalPort+2, []byte("spray"))
	}
	for deadline := time.Now().Add(5 * time.Second); m.Sprayers().Blocked != 1; {
		if time.Now().After(deadline) {
			t.Fatalf("sprayer not blocked: %+v", m.Sprayers())
		}
		time.Sleep(time.Millisecond) // polling a counter the workers set
	}
	// Busy calls go on.
	for i, info := range infos {
		parties[i][0].send(info.LocalPort, []byte("go-on"))
		parties[i][1].expect([]byte("go-on"), info.LocalPort+2)
	}
	// The fresh channel's real requester takes the port at once: the
	// sprayer's latch is vacant.
	a, b := newParty(t), newParty(t)
	a.send(fresh.LocalPort, []byte("a-hello"))
	b.send(fresh.LocalPort+2, []byte("b-hello"))
	a.expect([]byte("b-hello"), fresh.LocalPort)
	sprayer.send(fresh.LocalPort+2, []byte("spray-again"))
	b.send(fresh.LocalPort+2, []byte("b-2"))
	a.expect([]byte("b-2"), fresh.LocalPort)
	if n := countArrivals(sprayer, 1, 50*time.Millisecond); n != 0 {
		t.Fatal("the sprayer received media")
	}
	if got := liveStats(t, m, fresh.ID).Dropped[DropSprayer]; got != 1 {
		t.Errorf("sprayer drops %d on the fresh channel, want 1", got)
	}
	if got := m.Sprayers().BlockedTotal; got != 1 {
		t.Errorf("blocked total %d, want 1", got)
	}
}

// TestPacketCeiling: a latched source sending far above the ceiling (a
// forwarding loop looks like this) gets the ceiling's rate and burst
// through, the rest is counted.
func TestPacketCeiling(t *testing.T) {
	const pps = 100
	m, _ := newTestManager(t, func(c *Config) { c.MaxPPS = pps })
	info, a, b, _, _ := call(t, m)
	base := liveStats(t, m, info.ID)
	start := time.Now()
	const n = 2000
	for i := range n {
		a.send(info.LocalPort, fmt.Appendf(nil, "%d", i))
	}
	a.send(info.LocalPort, []byte("last"))
	var s Stats
	for deadline := time.Now().Add(5 * time.Second); ; {
		s = since(liveStats(t, m, info.ID), base)
		if s.Packets[LocalToRemote]+s.Dropped[DropPacketCeiling]+s.Dropped[DropForeignSource] >= n+1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond) // polling counters the worker sets
	}
	elapsed := time.Since(start)
	// Half a second of burst plus the rate over the elapsed time (and the
	// warm-up's share of the bucket).
	limit := uint64(pps/2 + pps*elapsed.Seconds() + 1 + 2*confirmAfter)
	if s.Packets[LocalToRemote] > limit || s.Dropped[DropPacketCeiling] == 0 {
		t.Fatalf("forwarded %d (limit %d in %s), ceiling drops %d", s.Packets[LocalToRemote], limit, elapsed, s.Dropped[DropPacketCeiling])
	}
	countArrivals(b, n, 50*time.Millisecond)
}

// TestRTCPFollowsRTPAddress: the RTCP leg, whose datagrams come every few
// seconds, takes the address of its side's confirmed RTP: a party that
// moved to a new address is followed there by its first RTCP datagram.
func TestRTCPFollowsRTPAddress(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) { c.LatchGrace = 0 })
	info, _, b, _, bc := call(t, m)
	p := info.LocalPort
	// The requester moves to another address (127.0.0.2 stands for it).
	a2, ac2 := newPartyAt(t, "127.0.0.2"), newPartyAt(t, "127.0.0.2")
	for i := range confirmAfter {
		a2.send(p, fmt.Appendf(nil, "rtp-%d", i))
	}
	b.expect(fmt.Appendf(nil, "rtp-%d", confirmAfter-1), p+2)
	ac2.send(p+1, []byte("rtcp-from-new-address"))
	bc.expect([]byte("rtcp-from-new-address"), p+3)
	bc.send(p+3, []byte("rtcp-back"))
	ac2.expect([]byte("rtcp-back"), p+1)
	if s := liveStats(t, m, info.ID); s.Relatched != 2 {
		t.Fatalf("relatched %d, want 2 (RTP, then RTCP)", s.Relatched)
	}
}

// TestSprayerDoesNotStallConfirmation: a foreign source that keeps
// sweeping a side (a sprayer at its rate of a datagram per port every so
// often) holds the challenger's slot, but the latched party, which sends
// far more, is still confirmed and the call flows both ways.
func TestSprayerDoesNotStallConfirmation(t *testing.T) {
	m, _ := newTestManager(t, nil)
	info, err := m.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	p := info.LocalPort
	a, b, sprayer := newParty(t), newParty(t), newPartyAt(t, "127.0.0.3")
	a.send(p, []byte("a-hello"))
	waitLatched(t, m, info.ID, 0, 0)
	b.send(p+2, []byte("b-hello"))
	a.expect([]byte("b-hello"), p)
	sprayer.send(p+2, []byte("spray"))
	for i := range 3 {
		b.send(p+2, fmt.Appendf(nil, "b-%d", i))
	}
	for range confirmAfter {
		a.send(p, []byte("a-warm"))
	}
	m.mu.Lock()
	c := m.channels[info.ID]
	m.mu.Unlock()
	for deadline := time.Now().Add(5 * time.Second); !c.legs[0].sides[1].confirmed.Load() || !c.legs[0].sides[0].confirmed.Load(); {
		if time.Now().After(deadline) {
			t.Fatalf("not confirmed: requester %v, other party %v", c.legs[0].sides[0].confirmed.Load(), c.legs[0].sides[1].confirmed.Load())
		}
		time.Sleep(time.Millisecond) // polling flags the worker sets
	}
	a.send(p, []byte("to-b"))
	for got, _ := b.recv(); string(got) != "to-b"; got, _ = b.recv() {
	}
	if n := countArrivals(sprayer, 1, 50*time.Millisecond); n != 0 {
		t.Fatal("the sprayer received the call")
	}
}

// TestSprayerUnmasked: a source that latched a fresh side and then sends
// to the other side's port, which a party holds, is a sprayer, not a
// party: its latch is vacated and it cannot take the side again, and the
// real party takes it at its first datagram.
func TestSprayerUnmasked(t *testing.T) {
	m, _ := newTestManager(t, nil)
	info, err := m.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	p := info.LocalPort
	sprayer, a, b := newPartyAt(t, "127.0.0.3"), newParty(t), newParty(t)
	sprayer.send(p, []byte("spray"))
	waitLatched(t, m, info.ID, 0, 0)
	b.send(p+2, []byte("b-1")) // the callee: latches P+2, forwarded to the sprayer (budget)
	sprayer.expect([]byte("b-1"), p)
	sprayer.send(p+2, []byte("spray")) // the sweep goes on: refused at P+2, unmasked at P
	m.mu.Lock()
	c := m.channels[info.ID]
	m.mu.Unlock()
	for deadline := time.Now().Add(5 * time.Second); c.legs[0].sides[0].evict.Load() == nil; {
		if time.Now().After(deadline) {
			t.Fatal("the sprayer was never unmasked")
		}
		time.Sleep(time.Millisecond) // polling the flag the worker sets (P and P+2 may be read in either order)
	}
	sprayer.send(p, []byte("spray")) // barred now
	a.send(p, []byte("a-1"))         // the caller takes P at once
	b.expect([]byte("a-1"), p+2)
	b.send(p+2, []byte("b-2"))
	a.expect([]byte("b-2"), p)
	if n := countArrivals(sprayer, 1, 50*time.Millisecond); n != 0 {
		t.Fatal("the sprayer received more after it was unmasked")
	}
	s := liveStats(t, m, info.ID)
	// Its datagram at P+2 is refused as a reflection (one socket on both
	// sides), the one at P as barred.
	if s.Relatched != 0 || s.Dropped[DropForbiddenPeer] != 1 || s.Dropped[DropForeignSource] != 1 {
		t.Fatalf("relatched %d (want 0: the side was vacated), forbidden-peer drops %d (want 1), foreign drops %d (want 1)",
			s.Relatched, s.Dropped[DropForbiddenPeer], s.Dropped[DropForeignSource])
	}
}
