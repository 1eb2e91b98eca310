package image

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/kernel/nft"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// TestArm64ImageFlowtable runs relayd in the guest with channel.fast_path
// flowtable (the guest kernel, Debian's arm64 6.1, has nf_flow_table;
// forwarding is turned on from the kernel command line) and proves on the
// guest kernel's own account that a call's legs went through the
// flowtable: the call is relayed exactly as in TestArm64Image, and then
// /proc/net/nf_conntrack shows one entry per leg in relayd's zone, marked
// [OFFLOAD], that counted the call's packets both ways; the channel's end
// credits the kernel's packets to it and it still expires on time.
func TestArm64ImageFlowtable(t *testing.T) {
	dir, qemu := image(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv := startProsody(ctx, t)
	base := freeRelayPorts(t)
	cfg := imageConfig(srv, base)
	cfg.Channel.FastPath = config.FastPathFlowtable
	v := boot(t, dir, qemu, marshal(t, cfg), channelForwards(base), "sysctl.net.ipv4.ip_forward=1")

	bootCtx, bootCancel := context.WithTimeout(ctx, 90*time.Second)
	defer bootCancel()
	on, err := v.console.waitLog(bootCtx, "in-kernel fast path on: latched legs are forwarded by the kernel")
	if err != nil {
		t.Fatal(err)
	}
	// virtio-net has no flow offload hardware: the software flowtable.
	if by := on.Str("by"); by != "nftables flowtable jnrelay (software)" {
		t.Fatalf("fast path by %q, want the software flowtable", by)
	}
	if _, err := v.console.waitLog(bootCtx, "xmpp component online"); err != nil {
		t.Fatal(err)
	}
	t.Logf("fast path %q, component online %s after qemu started", on.Str("by"), v.since())

	c := startCall(ctx, t, srv)
	// Warm-up datagrams until both legs are in the flowtable: relayd
	// relays the first ones, hands the legs to the kernel, and the
	// flowtable takes each entry. (The warm-up is not counted: one
	// datagram was lost at the hand-over here, to a conntrack insert
	// clash that kernel/nft now prevents by making each leg's entry at
	// install; TestArm64ImageHandoverProbe measures it, docs/image.md.)
	var before []ctLine
	for try := 0; ; try++ {
		warmUp(ctx, t, c)
		before = zoneEntries(t, showProc(ctx, t, v, "/proc/net/nf_conntrack"), nft.DefaultZone)
		if offloadedCount(before) == 2 {
			break
		}
		if try == 20 {
			t.Fatalf("after %d warm-up bursts, %d of the call's 2 legs are in the flowtable: %+v", try+1, offloadedCount(before), before)
		}
	}
	// Now a burst: every datagram must arrive, once, from the relay's
	// ports, and be counted by one [OFFLOAD] entry per leg.
	burst(ctx, t, c)
	lastSent := time.Now()
	after := zoneEntries(t, showProc(ctx, t, v, "/proc/net/nf_conntrack"), nft.DefaultZone)
	if len(after) != 2 || offloadedCount(after) != 2 {
		t.Fatalf("want 2 conntrack entries in zone %d (the RTP and the RTCP leg), both [OFFLOAD]: %+v", nft.DefaultZone, after)
	}
	for _, e := range after {
		t.Logf("guest conntrack: %s", e.line)
		var was [2]uint64
		for _, b := range before {
			if b.orig == e.orig {
				was = b.packets
			}
		}
		for d := range 2 {
			if e.packets[d]-was[d] < media {
				t.Errorf("entry counted %d packets in direction %d during a burst of %d: %s", e.packets[d]-was[d], d, media, e.line)
			}
		}
	}
	for _, st := range []struct {
		name string
		s    harness.Stats
		peer string
	}{{"callee RTP", c.callee.RTPStats(), "caller"}, {"callee RTCP", c.callee.RTCPStats(), "caller"},
		{"caller RTP", c.caller.RTPStats(), "callee"}, {"caller RTCP", c.caller.RTCPStats(), "callee"}} {
		src := st.s.Sources[st.peer]
		if src.Duplicates != 0 || st.s.Invalid != 0 || len(st.s.Sources) != 1 {
			t.Errorf("%s: %d duplicates, %d invalid, %d sources", st.name, src.Duplicates, st.s.Invalid, len(st.s.Sources))
		}
		for _, from := range src.From {
			if from.Addr() != loopback || from.Port() < base || from.Port() > base+3 {
				t.Errorf("%s received from %s, not from the relay's ports %d-%d", st.name, from, base, base+3)
			}
		}
	}

	line := waitChannelEnded(ctx, t, v)
	idle := time.Since(lastSent)
	rec, _ := record(line)
	if rec.Str("reason") != "expired" || idle > (imageExpire+5)*time.Second {
		t.Errorf("channel ended (%q) %s after the last datagram, want expired after about %d s", rec.Str("reason"), idle, imageExpire)
	}
	for _, d := range []string{"local_to_remote", "remote_to_local"} {
		// The burst alone: 2×media each way (RTP and RTCP).
		if n := rec.Int("kernel_packets_" + d); n < 2*media {
			t.Errorf("kernel_packets_%s = %d, want the flowtable's packets credited to the channel (≥ %d)", d, n, media)
		}
	}
	t.Logf("channel ended %s after the last datagram: %s", idle.Round(10*time.Millisecond), line[strings.IndexByte(line, '{'):])
}

// startCall gets a channel from relayd and latches two parties on the
// host's loopback to it.
func startCall(ctx context.Context, t *testing.T, srv *harness.XMPPServer) call {
	t.Helper()
	outs, err := srv.Requester(user, password).Run(ctx, harness.RequestArgs{})
	if err != nil || len(outs) != 1 || outs[0].Type != "result" {
		t.Fatalf("channel request: %+v %v", outs, err)
	}
	local, remote, err := outs[0].RelayAddrs()
	if err != nil {
		t.Fatal(err)
	}
	caller, callee := loopbackParties(ctx, t)
	cp, ep, err := harness.Latch(ctx, caller, callee, local, remote)
	if err != nil {
		t.Fatal(err)
	}
	return call{caller: caller, callee: callee, local: local, remote: remote, sent: &[4]int{cp, cp, ep, ep}}
}

// warmUp sends 20 RTP and RTCP packets each way on c without waiting for
// them.
func warmUp(ctx context.Context, t *testing.T, c call) {
	t.Helper()
	c.send(ctx, t, harness.Pace{Count: 20, Interval: 2 * time.Millisecond})
}

// send sends pace on each of c's four streams (RTP and RTCP, each way)
// and counts what was sent.
func (c call) send(ctx context.Context, t *testing.T, pace harness.Pace) {
	t.Helper()
	type result struct {
		stream, n int
		err       error
	}
	res := make(chan result, 4)
	go func() { n, err := c.caller.SendRTP(ctx, c.local, pace); res <- result{0, n, err} }()
	go func() { n, err := c.caller.SendRTCP(ctx, harness.RTCPOf(c.local), pace); res <- result{1, n, err} }()
	go func() { n, err := c.callee.SendRTP(ctx, c.remote, pace); res <- result{2, n, err} }()
	go func() { n, err := c.callee.SendRTCP(ctx, harness.RTCPOf(c.remote), pace); res <- result{3, n, err} }()
	for range 4 {
		r := <-res
		if r.err != nil {
			t.Fatal(r.err)
		}
		c.sent[r.stream] += r.n
	}
}

// drain waits (bounded: a lost last datagram is lost) until each stream's
// last datagram sent so far has arrived, so that none is in flight.
func (c call) drain(ctx context.Context) {
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = c.callee.WaitRTPThrough(wctx, "caller", c.sent[0])
	_ = c.callee.WaitRTCPThrough(wctx, "caller", c.sent[1])
	_ = c.caller.WaitRTPThrough(wctx, "callee", c.sent[2])
	_ = c.caller.WaitRTCPThrough(wctx, "callee", c.sent[3])
}

// offloadedCount is how many of entries are in the flowtable.
func offloadedCount(entries []ctLine) int {
	n := 0
	for _, e := range entries {
		if strings.Contains(e.line, "[OFFLOAD]") {
			n++
		}
	}
	return n
}

// burst sends media RTP and RTCP packets each way on c and waits until
// they all arrived.
func burst(ctx context.Context, t *testing.T, c call) {
	t.Helper()
	had := [4]int{c.callee.RTPStats().Sources["caller"].Packets, c.callee.RTCPStats().Sources["caller"].Packets,
		c.caller.RTPStats().Sources["callee"].Packets, c.caller.RTCPStats().Sources["callee"].Packets}
	c.send(ctx, t, harness.Pace{Count: media, Interval: 2 * time.Millisecond})
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for i, wait := range []func() error{
		func() error { return c.callee.WaitRTP(wctx, "caller", had[0]+media) },
		func() error { return c.callee.WaitRTCP(wctx, "caller", had[1]+media) },
		func() error { return c.caller.WaitRTP(wctx, "callee", had[2]+media) },
		func() error { return c.caller.WaitRTCP(wctx, "callee", had[3]+media) },
	} {
		if err := wait(); err != nil {
			t.Fatalf("burst through the flowtable, stream %d: %v", i, err)
		}
	}
}

// showProc asks the guest's init to print a /proc file and returns its
// lines.
func showProc(ctx context.Context, t *testing.T, v *vm, path string) []string {
	t.Helper()
	prefix := "show " + path + ": "
	isEnd := func(l string) bool { return strings.HasPrefix(l, "init: ") && strings.Contains(l, prefix+"end (") }
	// This request's output ends with the next end line: count those of
	// earlier requests.
	mark := v.console.String()
	ends := 0
	for _, l := range strings.Split(mark, "\n") {
		if isEnd(l) {
			ends++
		}
	}
	if _, err := fmt.Fprintf(v.stdin, "jnrelay-show %s\n", path); err != nil {
		t.Fatalf("write to the guest console: %v", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	seen := 0
	if _, err := v.console.wait(sctx, path+" shown", func(l string) bool {
		if isEnd(l) {
			seen++
		}
		return seen > ends
	}); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(v.console.String()[len(mark):], "\n") {
		l = strings.TrimRight(l, "\r")
		if i := strings.Index(l, prefix); i >= 0 && strings.HasPrefix(l, "init: ") && !strings.Contains(l, prefix+"end (") {
			lines = append(lines, l[i+len(prefix):])
		}
	}
	return lines
}

// ctLine is a conntrack entry of /proc/net/nf_conntrack.
type ctLine struct {
	line    string
	orig    string    // the original direction's addresses and ports
	packets [2]uint64 // original, reply
}

var packetsField = regexp.MustCompile(`packets=(\d+)`)

// zoneEntries are the UDP entries of zone.
func zoneEntries(t *testing.T, lines []string, zone int) []ctLine {
	t.Helper()
	var out []ctLine
	for _, l := range lines {
		if !strings.Contains(l, " udp ") || !strings.Contains(l, "zone="+strconv.Itoa(zone)+" ") && !strings.HasSuffix(l, "zone="+strconv.Itoa(zone)) {
			continue
		}
		m := packetsField.FindAllStringSubmatch(l, -1)
		if len(m) != 2 {
			t.Fatalf("conntrack entry without two packet counters (is accounting off?): %s", l)
		}
		e := ctLine{line: l}
		if i, j := strings.Index(l, "src="), strings.Index(l, " packets="); i >= 0 && j > i {
			e.orig = l[i:j]
		}
		for i := range 2 {
			e.packets[i], _ = strconv.ParseUint(m[i][1], 10, 64)
		}
		out = append(out, e)
	}
	return out
}

// waitChannelEnded waits, up to four expiry times, for relayd's "channel
// ended" line on the guest's console and returns it.
func waitChannelEnded(ctx context.Context, t *testing.T, v *vm) string {
	t.Helper()
	ectx, ecancel := context.WithTimeout(ctx, 4*imageExpire*time.Second)
	defer ecancel()
	line, err := v.console.wait(ectx, "channel ended", func(l string) bool {
		rec, ok := record(l)
		return ok && rec.Msg() == "channel ended"
	})
	if err != nil {
		t.Fatal(err)
	}
	return line
}
