package image

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
)

// TestArm64ImageHandoverProbe is a measurement, run only with
// JNRELAY_HANDOVER_PROBE=nftables|flowtable|ebpf (docs/image.md): a call,
// then warm-up bursts as TestArm64ImageFlowtable sends them, across the
// hand-over of its legs to the kernel, logging exactly which datagrams of
// each burst never arrived, the guest's counters of where datagrams are
// dropped (conntrack's insert_failed and drop, softnet, SNMP) before and
// after, and relayd's accounting of the call.
func TestArm64ImageHandoverProbe(t *testing.T) {
	mode := os.Getenv("JNRELAY_HANDOVER_PROBE")
	if mode == "" {
		t.Skip("a measurement: JNRELAY_HANDOVER_PROBE=nftables|flowtable|ebpf runs it")
	}
	dir, qemu := image(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv := startProsody(ctx, t)
	base := freeRelayPorts(t)
	cfg := imageConfig(srv, base)
	cfg.Channel.FastPath = config.FastPath(mode)
	cfg.Log.Level = "debug"
	v := boot(t, dir, qemu, marshal(t, cfg), channelForwards(base), "sysctl.net.ipv4.ip_forward=1")
	bootCtx, bootCancel := context.WithTimeout(ctx, 120*time.Second)
	defer bootCancel()
	on, err := v.console.waitLog(bootCtx, "in-kernel fast path on: latched legs are forwarded by the kernel")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.console.waitLog(bootCtx, "xmpp component online"); err != nil {
		t.Fatal(err)
	}
	t.Logf("fast path %q", on.Str("by"))
	procs := []string{"/proc/net/snmp", "/proc/net/softnet_stat"}
	if mode != "ebpf" {
		// Where conntrack drops a datagram: insert_failed, drop.
		procs = append(procs, "/proc/net/stat/nf_conntrack")
	}
	for _, p := range procs {
		t.Logf("before %s:\n%s", p, strings.Join(showProc(ctx, t, v, p), "\n"))
	}
	c := startCall(ctx, t, srv)
	c.drain(ctx)
	t.Logf("latched: sent %v, received %v, leg offloaded logs %d", *c.sent, c.received(), countLogs(v, "leg offloaded"))
	for burst := range 8 {
		from := *c.sent
		warmUp(ctx, t, c)
		c.drain(ctx)
		to := *c.sent
		var missing []string
		for i, m := range []func(string, int) []int64{c.callee.MissingRTP, c.callee.MissingRTCP, c.caller.MissingRTP, c.caller.MissingRTCP} {
			peer := [4]string{"caller", "caller", "callee", "callee"}[i]
			var in []int64
			for _, s := range m(peer, to[i]) {
				if s >= int64(from[i]) {
					in = append(in, s)
				}
			}
			missing = append(missing, fmt.Sprint(in))
		}
		t.Logf("burst %d (seq %v..%v): missing caller RTP %s caller RTCP %s callee RTP %s callee RTCP %s; leg offloaded logs %d",
			burst, from, to, missing[0], missing[1], missing[2], missing[3], countLogs(v, "leg offloaded"))
	}
	for _, p := range procs {
		t.Logf("after %s:\n%s", p, strings.Join(showProc(ctx, t, v, p), "\n"))
	}
	if mode != "ebpf" {
		t.Logf("conntrack:\n%s", strings.Join(showProc(ctx, t, v, "/proc/net/nf_conntrack"), "\n"))
	}
	line := waitChannelEnded(ctx, t, v)
	t.Logf("sent %v, received %v; %s", *c.sent, c.received(), line[strings.IndexByte(line, '{'):])
	// Every datagram arrived but those relayd dropped while latching.
	rec, _ := record(line)
	sent, got := 0, 0
	for i := range 4 {
		sent += c.sent[i]
		got += c.received()[i]
	}
	if latch := int(rec.Int("dropped_peer_not_latched") + rec.Int("dropped_unconfirmed_peer")); sent-got != latch {
		t.Errorf("%d datagrams sent, %d arrived, %d dropped by relayd while latching: %d lost elsewhere", sent, got, latch, sent-got-latch)
	}
	for _, l := range strings.Split(v.console.String(), "\n") {
		if strings.Contains(l, "leg offloaded") || strings.Contains(l, "fast path") || strings.Contains(l, "leg stays") {
			t.Logf("console: %s", strings.TrimSpace(l))
		}
	}
}
