package chaos

// The media-plane attacks of the donor-safety issue, end to end: the real
// relayd in a namespace of its own, and the attacker, the spoofer, the
// victims and the call parties as hosts of their own on its LAN. Each
// attack runs against every data plane the host supports (per_port,
// steered, fast_path). Every attack is bounded in count and time and aims
// only at the namespaces the test made.
//
// The relay's defences asserted here: a sprayer (one source address
// touching ≥ 16 channels within 5 s) is blocked for 10 minutes and its
// datagrams counted as "sprayer"; a side whose latched source has not
// shown it carries the call gets at most 2 datagrams; the relay's own
// addresses are never latched ("forbidden_peer"); a relay port forwards at
// most 2,000 datagrams/s with half a second of burst ("packet_ceiling");
// a port silent past its grace is not taken over by a single datagram.

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/daemon"
	"github.com/jnrelay/jnrelay/tests/harness"
)

const (
	pps          = 50                    // media packets a second, each way
	mediaEvery   = time.Second / pps     // 20 ms
	warmupPkts   = 10                    // the first 200 ms of a call, where loss is not held against the relay
	minDelivered = 0.95                  // of the packets sent after the warmup
	maxLeaked    = 4                     // media datagrams of a channel an attacker may see
	sprayPeriod  = 50 * time.Millisecond // between sweeps of the range
)

// TestAttackPortSpray: attackers sweep every port of the range from their
// own addresses (one datagram per port every 50 ms) before and while 20
// calls are set up, each with its own caller and callee address, both
// starting their media at 50 packets/s shortly after the channel is
// granted (after up to 100 ms of signalling, the two up to 60 ms apart).
// An attacker sees at most 4 media datagrams of any channel, the
// parties lose nothing measurable after the first 200 ms, and each
// sprayer is blocked ("sprayer blocked" logged with its address, its
// datagrams counted as dropped "sprayer").
func TestAttackPortSpray(t *testing.T) {
	forEachPlane(t, func(t *testing.T, dp dataPlane) {
		for _, attackers := range []int{1, 3} {
			t.Run(fmt.Sprintf("attackers=%d", attackers), func(t *testing.T) { portSpray(t, dp, attackers) })
		}
	})
}

func portSpray(t *testing.T, dp dataPlane, attackers int) {
	const (
		calls     = 20
		callPkts  = 100          // 2 s of media each way
		lo, hi    = 40000, 40099 // the port range: 25 channels
		maxSweeps = 300          // 15 s
	)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	hosts := []string{"relay", "caller", "callee"}
	var evil []string
	for i := range attackers {
		evil = append(evil, fmt.Sprintf("evil%d", i+1))
	}
	lan := attackLAN(t, "jxa", dp, []string{"relay"}, append(hosts, evil...)...)
	relay := startRelay(ctx, t, lan, "relay", dp, lo, hi, nil)
	for i := range calls {
		addAddr(t, lan, "caller", netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + i)}))
		addAddr(t, lan, "callee", netip.AddrFrom4([4]byte{203, 0, 113, byte(150 + i)}))
	}
	before := relay.status(ctx)

	stop := make(chan struct{})
	var sprayers []*sprayer
	for _, h := range evil {
		sprayers = append(sprayers, spray(ctx, newPeer(ctx, t, lan, h, netip.AddrPort{}, "spray"), relay.addr, lo, hi, sprayPeriod, maxSweeps, stop))
	}
	for _, s := range sprayers { // the range is being swept before the first call
		select {
		case <-s.warm:
		case <-s.done:
		}
	}

	type call struct {
		callerTag, calleeTag string
		caller, callee       *peer
		first                [2]uint32 // first sequence number each sent
		errs                 [2]error
	}
	cs := make([]*call, calls)
	var wg sync.WaitGroup
	for i := range calls {
		local, remote := relay.channel(ctx, fmt.Sprintf("user%d@example.net/phone", i))
		c := &call{callerTag: fmt.Sprintf("a%02d", i), calleeTag: fmt.Sprintf("b%02d", i)}
		c.caller = newPeer(ctx, t, lan, "caller", netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + i)}), 0), c.callerTag)
		c.callee = newPeer(ctx, t, lan, "callee", netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(150 + i)}), 0), c.calleeTag)
		cs[i] = c
		// The signalling between the grant and the media (session-initiate,
		// session-accept) takes up to 100 ms; then both parties start
		// their media at about the same time — up to 60 ms apart, either
		// first — and send 2 s of it. These waits stand for the network
		// and the phones, they synchronize nothing.
		signalling := time.Duration(rand.IntN(100)) * time.Millisecond
		apart := [2]time.Duration{0, time.Duration(rand.IntN(60)) * time.Millisecond}
		if rand.IntN(2) == 0 {
			apart[0], apart[1] = apart[1], apart[0]
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			time.Sleep(signalling + apart[0])
			c.first[0], c.errs[0] = c.caller.stream(ctx, local, callPkts, mediaEvery)
		}()
		go func() {
			defer wg.Done()
			time.Sleep(signalling + apart[1])
			c.first[1], c.errs[1] = c.callee.stream(ctx, remote, callPkts, mediaEvery)
		}()
	}
	wg.Wait()
	// The last packets in flight arrive (bounded; what is missing then is lost).
	want := atLeast(callPkts - warmupPkts)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	for _, c := range cs {
		c.callee.wait(wctx, c.callerTag, warmupPkts, callPkts-warmupPkts)
		c.caller.wait(wctx, c.calleeTag, warmupPkts, callPkts-warmupPkts)
	}
	wcancel()
	close(stop)
	for _, s := range sprayers {
		<-s.done
	}
	after := relay.status(ctx)

	victim := func(tag string) bool { return len(tag) == 3 && (tag[0] == 'a' || tag[0] == 'b') }
	leaked := map[int]int{}
	for i, s := range sprayers {
		per := perChannel(s.peer, lo, hi, victim)
		for base, n := range per {
			leaked[base] += n
		}
		t.Logf("attacker %s (%s): %d sweeps, %d datagrams sent; received %v", evil[i], s.addr().Addr(), s.sweeps, s.sent, s.tags())
	}
	hijacked, total := 0, 0
	var worst []string
	for base := lo; base <= hi; base += 4 {
		n := leaked[base]
		total += n
		if n > maxLeaked {
			hijacked++
			worst = append(worst, fmt.Sprintf("%d:%d", base, n))
		}
	}
	t.Logf("media datagrams of the calls received by the attackers: %d in all; channels over %d: %d %v", total, maxLeaked, hijacked, worst)
	if hijacked > 0 {
		t.Errorf("the attackers received more than %d media datagrams on %d of %d channels (%d in all; port:datagrams %v)", maxLeaked, hijacked, calls, total, worst)
	}

	var hurt []string
	injected, injectedCalls := 0, 0
	for _, c := range cs {
		if n := c.caller.count("spray") + c.callee.count("spray"); n > 0 {
			injected += n
			injectedCalls++
		}
		for _, e := range c.errs {
			if e != nil {
				t.Errorf("sending media: %v", e)
			}
		}
		toCallee := c.callee.got(c.callerTag, c.first[0]+warmupPkts, c.first[0]+callPkts)
		toCaller := c.caller.got(c.calleeTag, c.first[1]+warmupPkts, c.first[1]+callPkts)
		if toCallee < want || toCaller < want {
			hurt = append(hurt, fmt.Sprintf("%s→%s %d/%d %s→%s %d/%d (callee got %v, caller got %v)",
				c.callerTag, c.calleeTag, toCallee, callPkts-warmupPkts, c.calleeTag, c.callerTag, toCaller, callPkts-warmupPkts, c.callee.tags(), c.caller.tags()))
		}
	}
	t.Logf("the attackers' datagrams delivered to the calls' parties: %d, on %d calls", injected, injectedCalls)
	if len(hurt) > 0 {
		shown := hurt[:min(len(hurt), 6)]
		if len(hurt) > len(shown) {
			shown = append(shown, fmt.Sprintf("… and %d more", len(hurt)-len(shown)))
		}
		t.Errorf("%d of %d calls lost media after their first 200 ms (want ≥ %d of %d each way):\n  %s",
			len(hurt), calls, want, callPkts-warmupPkts, strings.Join(shown, "\n  "))
	}
	t.Logf("relay: forwarded %d, dropped %s", forwarded(after)-forwarded(before), reasons(after))

	// The relay's defence, which it either has or lacks entirely.
	if n := droppedDelta(before, after, "sprayer"); n == 0 {
		t.Errorf(`no datagram counted under drop reason "sprayer" (the relay has no sprayer detection: dropped %s)`, reasons(after))
	}
	for i, s := range sprayers {
		addr := s.addr().Addr()
		if relay.rd.Count("sprayer blocked", func(r harness.LogRecord) bool { return sameAddr(r.Str("addr"), addr) }) == 0 {
			t.Errorf(`no "sprayer blocked" log record with addr %s (attacker %s): the relay never blocked it`, addr, evil[i])
		}
	}
}

// sameAddr says whether s (an address, or address:port) is a.
func sameAddr(s string, a netip.Addr) bool {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr() == a
	}
	b, err := netip.ParseAddr(s)
	return err == nil && b == a
}

// TestAttackSpoofedReflection: a spoofer sends datagrams whose forged
// source is a victim host of the LAN (which never takes part in the call)
// to a fresh channel's remote port, one every 2 s for 6 s, while the real
// parties run their call at 50 packets/s. The victim receives at most 2
// datagrams, and the call loses nothing measurable after its first 200 ms.
func TestAttackSpoofedReflection(t *testing.T) {
	forEachPlane(t, func(t *testing.T, dp dataPlane) {
		const callPkts = 6*pps + pps/2 // 6.5 s
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		lan := attackLAN(t, "jxr", dp, []string{"relay"}, "relay", "caller", "callee", "evil", "victim")
		relay := startRelay(ctx, t, lan, "relay", dp, 40000, 40039, nil)
		victim := newPeer(ctx, t, lan, "victim", netip.AddrPortFrom(lan.Addr("victim"), 5004), "victim")
		caller := newPeer(ctx, t, lan, "caller", netip.AddrPort{}, "caller")
		callee := newPeer(ctx, t, lan, "callee", netip.AddrPort{}, "callee")
		sp := newSpoofer(t, lan.NS("evil"))
		local, remote := relay.channel(ctx, "alice@example.net/phone")
		before := relay.status(ctx)

		buf := forged("spoof")
		spoof := func() {
			if err := sp.send(buf, victim.addr(), remote, len(buf)-28); err != nil {
				t.Errorf("spoof: %v", err)
			}
		}
		// The first forged datagram reaches the fresh channel before the
		// call's media does.
		spoof()
		relay.awaitStatus(ctx, 10*time.Second, func(st daemon.Status) bool {
			return totalDropped(st)+forwarded(st)+st.Traffic.Relatched > totalDropped(before)+forwarded(before)+before.Traffic.Relatched
		})
		var first [2]uint32
		var errs [2]error
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); first[0], errs[0] = caller.stream(ctx, local, callPkts, mediaEvery) }()
		go func() { defer wg.Done(); first[1], errs[1] = callee.stream(ctx, remote, callPkts, mediaEvery) }()
		spoofs := 1
		tick := time.NewTicker(2 * time.Second)
		for range 3 { // at 2, 4 and 6 s
			<-tick.C
			spoof()
			spoofs++
		}
		tick.Stop()
		wg.Wait()
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		callee.wait(wctx, "caller", first[0]+warmupPkts, callPkts-warmupPkts)
		caller.wait(wctx, "callee", first[1]+warmupPkts, callPkts-warmupPkts)
		wcancel()
		after := relay.status(ctx)
		for _, e := range errs {
			if e != nil {
				t.Fatalf("sending media: %v", e)
			}
		}
		toCallee := callee.got("caller", first[0]+warmupPkts, first[0]+callPkts)
		toCaller := caller.got("callee", first[1]+warmupPkts, first[1]+callPkts)
		t.Logf("%d forged datagrams from %s to %s; the victim received %d datagrams %v; the call: caller→callee %d/%d, callee→caller %d/%d after 200 ms; relay dropped %s",
			spoofs, victim.addr(), remote, victim.count(""), victim.tags(), toCallee, callPkts-warmupPkts, toCaller, callPkts-warmupPkts, reasons(after))
		if n := victim.count(""); n > 2 {
			t.Errorf("the victim %s received %d datagrams from the relay (%v), want ≤ 2: the relay reflected the call's media at a forged source", victim.addr(), n, victim.tags())
		}
		want := atLeast(callPkts - warmupPkts)
		if toCallee < want || toCaller < want {
			t.Errorf("the call was harmed: caller→callee %d, callee→caller %d of %d packets after the first 200 ms, want ≥ %d (callee got %v, caller got %v)",
				toCallee, toCaller, callPkts-warmupPkts, want, callee.tags(), caller.tags())
		}
	})
}

// forged is a harness RTP packet tagged tag behind 28 bytes of room for
// the spoofer's IPv4 and UDP headers.
func forged(tag string) []byte {
	p := harness.Packet{PayloadType: harness.DefaultPayloadType, Tag: harness.NewTag(tag), SentAt: time.Now().UnixNano()}
	return p.AppendRTP(make([]byte, 28), harness.DefaultRTPSize)
}

// atLeast is how many of n packets must arrive.
func atLeast(n int) int { return int(math.Ceil(minDelivered * float64(n))) }

func totalDropped(st daemon.Status) uint64 {
	var n uint64
	for _, v := range st.Traffic.Dropped {
		n += v
	}
	return n
}

// TestAttackSelfForwarding: datagrams forged from the relay's own address
// and relay ports (relay:P+2 → P, relay:P → P+2, a few of each) would
// latch a channel onto itself and loop in the relay. The relay forwards
// none of them, its CPU stays low, and it counts them as dropped
// "forbidden_peer".
func TestAttackSelfForwarding(t *testing.T) {
	forEachPlane(t, func(t *testing.T, dp dataPlane) {
		const rounds = 4
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		lan := attackLAN(t, "jxl", dp, []string{"relay"}, "relay", "evil")
		// The relay's kernel takes a datagram from its own address off the
		// wire (a router upstream does not check sources either).
		sysctl(t, lan, "relay", "net.ipv4.conf.all.accept_local=1", "net.ipv4.conf.br0.accept_local=1")
		relay := startRelay(ctx, t, lan, "relay", dp, 40000, 40003, nil)
		local, remote := relay.channel(ctx, "alice@example.net/phone")
		sp := newSpoofer(t, lan.NS("evil"))
		before := relay.status(ctx)
		cpu0, t0 := harness.ProcCPU(relay.rd.PID()), time.Now()
		buf := forged("forged")
		for range rounds {
			for _, pair := range [][2]netip.AddrPort{{remote, local}, {local, remote}} {
				if err := sp.send(buf, pair[0], pair[1], len(buf)-28); err != nil {
					t.Fatalf("forge: %v", err)
				}
			}
		}
		sent := uint64(2 * rounds)
		// The fixed relay has counted them all at once; otherwise the
		// window shows what they did.
		after, _ := relay.awaitStatus(ctx, 10*time.Second, func(st daemon.Status) bool {
			return droppedDelta(before, st, "forbidden_peer") >= sent
		})
		if time.Since(t0) < time.Second { // a CPU figure needs a window
			after, _ = relay.awaitStatus(ctx, time.Second-time.Since(t0), func(daemon.Status) bool { return false })
		}
		cpu, window := harness.ProcCPU(relay.rd.PID())-cpu0, time.Since(t0)
		fwd := forwarded(after) - forwarded(before)
		t.Logf("%d datagrams forged from %s/%s: the relay forwarded %d packets in %s (%.0f/s), CPU %.2f s (%.0f%% of a core); dropped %s",
			sent, remote, local, fwd, window.Round(time.Millisecond), float64(fwd)/window.Seconds(), cpu, 100*cpu/window.Seconds(), reasons(after))
		if fwd > 2 {
			t.Errorf("the relay forwarded %d packets between its own ports after %d forged datagrams (a loop: %.0f packets/s)", fwd, sent, float64(fwd)/window.Seconds())
		}
		if share := cpu / window.Seconds(); share > 0.25 {
			t.Errorf("relay CPU %.0f%% of a core over %s after the forged datagrams, want ≤ 25%%", 100*share, window.Round(time.Millisecond))
		}
		if n := droppedDelta(before, after, "forbidden_peer"); n < sent {
			t.Errorf(`%d of %d datagrams from the relay's own address counted under drop reason "forbidden_peer" (dropped %s)`, n, sent, reasons(after))
		}
	})
}

// TestAttackRelayLoop: two relays (two relayd processes in two relay
// namespaces) latched to each other by forged datagrams, 8 to each of the
// four ports involved, so that each relays into the other in a circle.
// The loop stops within about a second — the forwarded counters of both
// relays stop growing — and the excess is counted as dropped
// "packet_ceiling".
func TestAttackRelayLoop(t *testing.T) {
	forEachPlane(t, func(t *testing.T, dp dataPlane) {
		const perPort = 8
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		lan := attackLAN(t, "jxo", dp, []string{"relay", "relay2"}, "relay", "relay2", "evil")
		a := startRelay(ctx, t, lan, "relay", dp, 40000, 40003, nil)
		b := startRelay(ctx, t, lan, "relay2", dp, 41000, 41003, nil)
		aLocal, aRemote := a.channel(ctx, "alice@example.net/phone")
		bLocal, bRemote := b.channel(ctx, "bob@example.net/phone")
		sp := newSpoofer(t, lan.NS("evil"))
		beforeA, beforeB := a.status(ctx), b.status(ctx)
		// A:P ⇄ B:P+2 and A:P+2 ⇄ B:P: what A forwards out of P+2 reaches
		// B's P, which B forwards out of P+2 to A's P, and so on.
		forgeries := [][2]netip.AddrPort{ // source, destination
			{bRemote, aLocal}, {bLocal, aRemote}, {aRemote, bLocal}, {aLocal, bRemote},
		}
		buf := forged("forged")
		for range perPort {
			for _, f := range forgeries {
				if err := sp.send(buf, f[0], f[1], len(buf)-28); err != nil {
					t.Fatalf("forge: %v", err)
				}
			}
		}
		sentAt := time.Now()

		// Poll both relays until neither forwarded anything for 750 ms
		// (three credits of the fast path's counters), for at most 6 s.
		type sample struct {
			at   time.Time
			a, b uint64
		}
		var samples []sample
		lastGrowth := sentAt
		stopped := false
		var stA, stB daemon.Status
		for deadline := sentAt.Add(6 * time.Second); time.Now().Before(deadline); {
			stA, stB = a.status(ctx), b.status(ctx)
			s := sample{time.Now(), forwarded(stA) - forwarded(beforeA), forwarded(stB) - forwarded(beforeB)}
			if n := len(samples); n > 0 && (s.a != samples[n-1].a || s.b != samples[n-1].b) {
				lastGrowth = s.at
			}
			samples = append(samples, s)
			if s.at.Sub(lastGrowth) >= 750*time.Millisecond {
				stopped = true
				break
			}
			time.Sleep(100 * time.Millisecond) // polling counters the relays credit every 250 ms
		}
		last := samples[len(samples)-1]
		rate := func(pick func(sample) uint64) float64 { // over the last second sampled
			for i := len(samples) - 1; i >= 0; i-- {
				if d := last.at.Sub(samples[i].at); d >= time.Second {
					return float64(pick(last)-pick(samples[i])) / d.Seconds()
				}
			}
			return 0
		}
		rateA, rateB := rate(func(s sample) uint64 { return s.a }), rate(func(s sample) uint64 { return s.b })
		t.Logf("%d forged datagrams; after %s relay A forwarded %d packets (%.0f/s over the last second), relay B %d (%.0f/s); last growth %s after the forgeries",
			perPort*len(forgeries), last.at.Sub(sentAt).Round(time.Millisecond), last.a, rateA, last.b, rateB, lastGrowth.Sub(sentAt).Round(time.Millisecond))
		t.Logf("relay A dropped %s; relay B dropped %s", reasons(stA), reasons(stB))
		switch {
		case !stopped:
			t.Errorf("the loop between the relays still ran %s after the forged datagrams: A forwarding %.0f packets/s, B %.0f/s (%d and %d in all)",
				last.at.Sub(sentAt).Round(time.Millisecond), rateA, rateB, last.a, last.b)
		case lastGrowth.Sub(sentAt) > 2*time.Second:
			t.Errorf("the loop between the relays ran %s before it stopped, want about a second (A forwarded %d, B %d)",
				lastGrowth.Sub(sentAt).Round(time.Millisecond), last.a, last.b)
		}
		// The ceiling: 2,000 datagrams/s per relay port with 0.5 s of
		// burst; a loop that got past the burst must have hit it.
		const burst = 1000
		ceiling := droppedDelta(beforeA, stA, "packet_ceiling") + droppedDelta(beforeB, stB, "packet_ceiling")
		if (last.a > 2*burst || last.b > 2*burst) && ceiling == 0 {
			t.Errorf(`the relays forwarded %d and %d looping packets and counted none under drop reason "packet_ceiling" (A dropped %s; B dropped %s)`,
				last.a, last.b, reasons(stA), reasons(stB))
		}
	})
}

// TestAttackQuietTakeover: during a call the callee goes silent for longer
// than latch_grace_seconds (1 s here); an attacker sends one datagram to
// the callee's relay port from its own address; the callee resumes. The
// caller's media never reaches the attacker and reaches the callee again.
// A NAT rebinding still works: the callee moving to a new source port,
// then to a new address, with sustained media, gets the caller's media at
// its new address within the grace and a second, and the relay counts a
// relatch each time.
func TestAttackQuietTakeover(t *testing.T) {
	forEachPlane(t, func(t *testing.T, dp dataPlane) {
		const grace = 1
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		lan := attackLAN(t, "jxt", dp, []string{"relay"}, "relay", "caller", "callee", "evil")
		relay := startRelay(ctx, t, lan, "relay", dp, 40000, 40003, func(c *config.Config) { c.Channel.LatchGraceSeconds = grace })
		local, remote := relay.channel(ctx, "alice@example.net/phone")
		caller := newPeer(ctx, t, lan, "caller", netip.AddrPort{}, "caller")
		callee := newPeer(ctx, t, lan, "callee", netip.AddrPort{}, "callee")
		attacker := newPeer(ctx, t, lan, "evil", netip.AddrPort{}, "evil")

		stopCaller := make(chan struct{})
		callerDone := caller.streamUntil(ctx, local, 40*pps, stopCaller)
		stopCallee := make(chan struct{})
		calleeDone := callee.streamUntil(ctx, remote, 40*pps, stopCallee)
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		if err := callee.wait(wctx, "caller", 0, 25); err != nil {
			t.Fatalf("the call: %v", err)
		}
		if err := caller.wait(wctx, "callee", 0, 25); err != nil {
			t.Fatalf("the call: %v", err)
		}
		wcancel()

		// The callee falls silent past the grace (a hold, a muted phone
		// with no comfort noise): the time is the attack's precondition.
		close(stopCallee)
		<-calleeDone
		time.Sleep(grace*time.Second + 600*time.Millisecond)
		before := relay.status(ctx)
		if err := attacker.send(remote); err != nil {
			t.Fatal(err)
		}
		relay.awaitStatus(ctx, 10*time.Second, func(st daemon.Status) bool {
			return totalDropped(st)+st.Traffic.Relatched > totalDropped(before)+before.Traffic.Relatched
		})
		// The callee resumes and must hear the caller again.
		caller.mu.Lock()
		resumeSeq := caller.seq
		caller.mu.Unlock()
		stopCallee = make(chan struct{})
		calleeDone = callee.streamUntil(ctx, remote, 40*pps, stopCallee)
		wctx, wcancel = context.WithTimeout(ctx, 15*time.Second)
		err := callee.wait(wctx, "caller", resumeSeq, 25)
		wcancel()
		afterAttack := relay.status(ctx)
		t.Logf("one datagram from %s to %s after %d s of silence: the attacker received %d of the caller's packets (%v); relatched %d→%d; dropped %s",
			attacker.addr(), remote, grace, attacker.count("caller"), attacker.tags(), before.Traffic.Relatched, afterAttack.Traffic.Relatched, reasons(afterAttack))
		if n := attacker.count("caller"); n > 0 {
			t.Errorf("the attacker took the quiet callee's port over with one datagram and received %d of the caller's media packets, want 0", n)
		}
		if err != nil {
			t.Errorf("the callee resumed and did not hear the caller again: %v", err)
		}

		// NAT rebinding: the callee's media comes from a new port, then a
		// new address, with no pause; the relay follows after the grace.
		rebind := func(name string, at netip.AddrPort) {
			close(stopCallee)
			<-calleeDone
			moved := newPeer(ctx, t, lan, "callee", at, "callee")
			st0 := relay.status(ctx)
			caller.mu.Lock()
			seq := caller.seq
			caller.mu.Unlock()
			stopCallee = make(chan struct{})
			start := time.Now()
			calleeDone = moved.streamUntil(ctx, remote, 40*pps, stopCallee)
			wctx, wcancel := context.WithTimeout(ctx, (grace+1)*time.Second)
			err := moved.wait(wctx, "caller", seq, 1)
			wcancel()
			took := time.Since(start)
			st, _ := relay.awaitStatus(ctx, 10*time.Second, func(st daemon.Status) bool { return st.Traffic.Relatched > st0.Traffic.Relatched })
			t.Logf("rebinding to a new %s (%s): the caller's media reached it after %s; relatched %d→%d", name, moved.addr(), took.Round(time.Millisecond), st0.Traffic.Relatched, st.Traffic.Relatched)
			if err != nil {
				t.Errorf("rebinding to a new %s: the caller's media did not reach %s within %d s: %v", name, moved.addr(), grace+1, err)
			}
			if st.Traffic.Relatched <= st0.Traffic.Relatched {
				t.Errorf("rebinding to a new %s: status shows no relatch (%d)", name, st.Traffic.Relatched)
			}
			callee = moved
		}
		rebind("source port", netip.AddrPortFrom(lan.Addr("callee"), 0))
		moved := netip.AddrFrom4([4]byte{203, 0, 113, 200})
		addAddr(t, lan, "callee", moved)
		rebind("address", netip.AddrPortFrom(moved, 0))
		close(stopCallee)
		close(stopCaller)
		<-calleeDone
		<-callerDone
	})
}
