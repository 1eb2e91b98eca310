package channel

import (
	"net/netip"
	"sync/atomic"
	"time"
)

// Latching: which source a relay port accepts, and so where the other
// side's traffic goes. XEP-0278 signals no party addresses, so a port
// learns its party from what arrives — and an attacker who sends to the
// port (a sprayer guessing ports, a spoofer forging another host's
// address) arrives too. The rules, per side:
//
//   - The first permitted source latches the side *tentatively*
//     (peers.go decides what is permitted). Toward a tentative side the
//     relay forwards at most probeBudget datagrams in the channel's life:
//     a source that sent one datagram learns almost nothing and a forged
//     source reflects almost nothing.
//   - A tentative latch is *confirmed* once its source has sent
//     confirmAfter datagrams while the other side of the leg was latched,
//     and no other source competed for the side or it sent more than
//     twice as many as its challenger. From then on the side gets
//     everything.
//   - Another source is a *challenger*. One challenger at a time is
//     followed (a slot held while it keeps sending); it takes the side
//     only with evidence that it carries the call: at least confirmAfter
//     datagrams and, from a tentative latch, more than twice as many as
//     the latched source sent over the same streak; from a confirmed one,
//     a streak of the latch grace during which the latched source sent
//     nothing (a NAT rebinding, a call on hold). A confirmed party that
//     still sends keeps its side however hard anyone else sends. A lone
//     datagram never takes a latched side.
//   - A source that holds one side tentatively and is refused at the
//     other side's port is a sprayer, not a party (a party sends to its
//     own side only): the side is vacated and the source barred from it.
//   - On the RTCP leg the address that carries the side's confirmed RTP
//     is evidence enough: RTCP comes every few seconds, far too rarely to
//     out-send anyone, so a latch there confirms, and a challenger from
//     that address takes over a latch from another address, at once.
//   - Every refusal and every displaced latch is reported to the sprayer
//     guard (sprayers.go), which blocks a source that does this across
//     many channels.
const (
	probeBudget  = 2
	confirmAfter = 4
	// slotGap is how long a challenger holds the slot without sending:
	// a party carrying a call sends every 20-60 ms.
	slotGap = 100 * time.Millisecond
	rtcpLeg = 1
)

// latchState is a side's latching evidence. Written only by the worker
// that serves the side's port; confirmed and budget are read (budget
// spent) by the worker forwarding toward the side.
type latchState struct {
	confirmed atomic.Bool
	budget    atomic.Int32 // datagrams still allowed toward the side while it is tentative
	heard     uint32       // datagrams from the latched source since it latched
	proof     uint32       // of those, the ones sent while the other side was latched
	cand      netip.AddrPort
	candN     uint32 // the challenger's datagrams in its streak
	candHeard uint32 // heard when the streak began
	candFirst int64
	candLast  int64
	reported  netip.Addr // the last source reported to the sprayer guard from this side
	// evict is set (by any worker) to the latch found a sprayer (unmask).
	evict    atomic.Pointer[netip.AddrPort]
	evictBar atomic.Bool       // bar the evicted source too (the very socket was refused)
	barred   [4]netip.AddrPort // sources unmasked at this side
	nBarred  int
}

// admit applies the latching rules to a datagram from src arriving at
// in at time now (ns since the channel's creation). It returns false and
// the reason when the datagram must be dropped.
func (c *Channel) admit(in *side, src netip.AddrPort, now int64) (DropReason, bool) {
	sh := c.sh
	cur := in.latched.Load()
	if cur != nil && c.unmaskedLatch(in, cur) {
		cur = nil // its source also knocked on the other side's port: a sprayer
	}
	if cur != nil && *cur == src {
		if sh != nil && sh.guard.isBlocked(src.Addr()) {
			return DropSprayer, false
		}
		in.lastSeen.Store(now)
		in.heard++
		in.proof++
		if !in.confirmed.Load() && c.evident(in, now) {
			c.confirm(in)
		}
		return 0, true
	}
	if sh != nil {
		if !sh.peers.Load().permits(src, sh.isRelayPort) {
			return DropForbiddenPeer, false
		}
		if sh.guard.isBlocked(src.Addr()) {
			return DropSprayer, false
		}
	}
	if in.isBarred(src) {
		return DropForeignSource, false
	}
	if o := c.legs[in.leg].sides[1-in.side].latched.Load(); o != nil && *o == src {
		// One socket as both parties of a leg would have its own
		// datagrams reflected to it.
		c.unmask(in, src)
		return DropForbiddenPeer, false
	}
	if cur == nil || (sh != nil && sh.guard.isBlocked(cur.Addr())) {
		c.latch(in, src, now, false)
		return 0, true
	}
	// A foreign source: the challenger, a new challenger, or noise.
	streak := int64(max(c.grace, slotGap))
	switch {
	case in.cand == src && now-in.candLast <= streak:
		in.candN++
	case !in.cand.IsValid() || now-in.candLast > int64(slotGap):
		in.cand, in.candN, in.candFirst, in.candHeard = src, 1, now, in.heard
	default:
		c.refuse(in, src, now)
		return DropForeignSource, false
	}
	in.candLast = now
	if c.wins(in, cur, now) {
		c.reportSource(in, cur.Addr()) // it did not carry the call, or no longer does
		c.latch(in, src, now, true)
		c.stats.relatched.Add(1)
		return 0, true
	}
	c.refuse(in, src, now)
	return DropForeignSource, false
}

// evident reports whether in's latched source has now shown that it
// carries the call.
func (c *Channel) evident(in *side, now int64) bool {
	if in.leg == rtcpLeg {
		if rtp := c.confirmedRTP(in); rtp.IsValid() && rtp == in.latched.Load().Addr() {
			return true
		}
	}
	if c.legs[in.leg].sides[1-in.side].latched.Load() == nil {
		// Datagrams sent before the other side latched go nowhere and
		// show nothing: a sprayer reaches fresh channels first.
		in.proof = 0
		return false
	}
	if in.proof < confirmAfter {
		return false
	}
	// A challenger still sending must be out-sent: a real party sends
	// every 20-60 ms, a sprayer sweeping a whole range far less often
	// per port, and neither may be confirmed while the other sends more.
	return !in.cand.IsValid() || now-in.candLast > int64(slotGap) || in.heard-in.candHeard > 2*in.candN
}

// wins reports whether in's challenger now takes the side from cur.
func (c *Channel) wins(in *side, cur *netip.AddrPort, now int64) bool {
	if in.leg == rtcpLeg {
		if rtp := c.confirmedRTP(in); rtp.IsValid() && rtp == in.cand.Addr() && rtp != cur.Addr() {
			return true
		}
	}
	if in.candN < confirmAfter {
		return false
	}
	latched := in.heard - in.candHeard
	if c.legs[in.leg].inKernel.Load() {
		// The latched peer's datagrams bypass us: only recent counters
		// tell whether it spoke during the streak.
		if !c.countersFresh() || in.lastSeen.Load() >= in.candFirst {
			return false
		}
		latched = 0
	}
	if in.confirmed.Load() {
		// A party that has carried the call keeps it while it sends, however
		// hard anyone else sends: only its silence over the grace (a NAT
		// rebinding, a call on hold) lets a new source in.
		return latched == 0 && now-in.candFirst >= int64(c.grace)
	}
	return 2*latched < in.candN
}

// confirmedRTP is the address latched and confirmed on the RTP port of
// in's side (zero when there is none).
func (c *Channel) confirmedRTP(in *side) netip.Addr {
	rtp := &c.legs[0].sides[in.side]
	if p := rtp.latched.Load(); p != nil && rtp.confirmed.Load() {
		return p.Addr()
	}
	return netip.Addr{}
}

// latch makes src the side's source: confirmed when it won a contest,
// tentative when it is the first.
func (c *Channel) latch(in *side, src netip.AddrPort, now int64, confirmed bool) {
	in.latched.Store(newAddrPort(src))
	in.lastSeen.Store(now)
	in.heard, in.proof = 1, 1
	if confirmed {
		in.heard, in.proof = in.candN, in.candN
	}
	in.cand, in.candN = netip.AddrPort{}, 0
	in.shield.foreign = 0
	in.confirmed.Store(confirmed || c.evident(in, now))
	c.latchChanged(in)
}

// confirm marks in's latch as carrying the call.
func (c *Channel) confirm(in *side) {
	in.confirmed.Store(true)
	c.latchChanged(in)
}

// refuse counts a foreign datagram against its source and the port.
func (c *Channel) refuse(in *side, src netip.AddrPort, now int64) {
	c.reportSource(in, src.Addr())
	c.unmask(in, src)
	if in.confirmed.Load() && now-in.lastSeen.Load() <= int64(c.grace) {
		// A flood at a side whose confirmed source still sends goes to
		// the in-kernel shield. Not while it is silent: a rebinding
		// party's streak must stay visible.
		c.noteForeign(in)
	}
}

// unmask handles a datagram from src refused at in: a party sends to its
// own side's ports only, so if src's address holds the other side of the
// leg tentatively, it is a sprayer there (it sends to every port, from one
// socket or many), not a party. That side is vacated for the next source
// — the real party usually, which out-sends a sprayer anyway — and, when
// the very socket was refused, that socket is barred from it; the side's
// worker carries it out at the side's next datagram. (Two parties behind
// one NAT share an address: a tentative one is vacated when the other is
// refused, and latches again with its next datagram. On loopback, where
// tests and demos run every party, only the very socket counts.)
func (c *Channel) unmask(in *side, src netip.AddrPort) {
	o := &c.legs[in.leg].sides[1-in.side]
	if p := o.latched.Load(); p != nil && p.Addr() == src.Addr() && !o.confirmed.Load() && (*p == src || !src.Addr().Unmap().IsLoopback()) {
		o.evictBar.Store(*p == src)
		o.evict.Store(p)
	}
}

// unmaskedLatch reports whether cur, in's latch, was found a sprayer
// (unmask); if so it vacates in, barring cur when unmask said so. Only
// in's worker calls it.
func (c *Channel) unmaskedLatch(in *side, cur *netip.AddrPort) bool {
	if in.evict.Load() != cur {
		return false
	}
	if in.evictBar.Load() {
		in.barred[in.nBarred%len(in.barred)] = *cur
		in.nBarred++
	}
	in.latched.Store(nil)
	in.evict.Store(nil)
	c.reportSource(in, cur.Addr())
	return true
}

// isBarred reports whether src was unmasked as a sprayer at in.
func (in *side) isBarred(src netip.AddrPort) bool {
	for i := range min(in.nBarred, len(in.barred)) {
		if in.barred[i] == src {
			return true
		}
	}
	return false
}

// reportSource tells the sprayer guard that a touched this channel the
// way a sprayer does (once per side and address in a row).
func (c *Channel) reportSource(in *side, a netip.Addr) {
	if c.sh == nil || in.reported == a {
		return
	}
	in.reported = a
	c.sh.guard.report(a, uint32(c.info.LocalPort))
}

// sendable reports whether a datagram may go toward out now, spending
// out's probe budget when out is tentative; it returns the reason to drop
// it otherwise.
func (c *Channel) sendable(out *side, dst netip.AddrPort) (DropReason, bool) {
	if c.sh != nil && c.sh.guard.isBlocked(dst.Addr()) {
		return DropSprayer, false
	}
	if p := out.evict.Load(); p != nil && p == out.latched.Load() {
		return DropUnconfirmedPeer, false // unmasked as a sprayer
	}
	if !out.confirmed.Load() && out.budget.Add(-1) < 0 {
		out.budget.Add(1) // stays at 0, never wraps
		return DropUnconfirmedPeer, false
	}
	return 0, true
}

// packetBucket is a side's packet-rate ceiling (the generic cell rate
// algorithm: tat is the theoretical arrival time of the next datagram).
// It stops a forwarding loop — two relays latched to each other, a
// datagram bouncing between them as fast as they turn it round — within
// its burst, whatever else failed to prevent it.
type packetBucket struct{ tat int64 }

// allow reports whether one more datagram fits a ceiling of one per
// interval ns with burst ns of slack.
func (b *packetBucket) allow(now, interval, burst int64) bool {
	tat := max(b.tat, now)
	if tat-now > burst {
		return false
	}
	b.tat = tat + interval
	return true
}
