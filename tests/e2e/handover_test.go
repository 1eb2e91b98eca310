package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/tests/harness"
)

// TestHandover: in calls whose parties stream numbered RTP and RTCP both
// ways from their first datagram, every datagram crosses the hand-over of
// both legs from relayd to the kernel once: what the relay does not
// account for as a latching drop (sent before the other side latched or
// confirmed, all among the first few) arrives, exactly once, and relayd's
// counters match what arrived. With each fast path a leg can take here
// (the flowtable is not on this kernel: kernel/nft's TestNATEntryMadeAtInstall
// covers its part).
func TestHandover(t *testing.T) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jnh", "relay", "caller", "callee")
	srv := startServer(ctx, t, "prosody", lan.NS("relay"), map[string]string{user: password})
	for _, mode := range []string{"nftables", "ebpf"} {
		t.Run(mode, func(t *testing.T) {
			w := &world{lan: lan, srv: srv, req: srv.Requester(user, password), fastPath: mode}
			w.forwarding(t, true)
			defer w.forwarding(t, false)
			w.testHandover(ctx, t, 3)
		})
	}
}

// handoverStream is how many datagrams each party sends on each socket
// (half a second of 2 ms packets), and latchRegion how many first ones
// the relay may drop while it latches and confirms both sides.
const (
	handoverStream = 250
	latchRegion    = 10
)

func (w *world) testHandover(ctx context.Context, t *testing.T, calls int) {
	rd := w.startRelay(ctx, t, w.relayConfig())
	outs, err := w.req.Run(ctx, harness.RequestArgs{Count: calls})
	if err != nil || len(outs) != calls {
		t.Fatalf("%d channel requests: %+v %v", calls, outs, err)
	}
	type stream struct {
		name     string
		to       *harness.Endpoint
		from     string
		rtcp     bool
		received int
	}
	byCall := map[string][]stream{}
	for _, res := range outs {
		local, remote, err := res.RelayAddrs()
		if err != nil {
			t.Fatal(err)
		}
		id := res.Channel["id"]
		caller, err := w.lan.ListenEndpoint(ctx, "caller", "caller")
		if err != nil {
			t.Fatal(err)
		}
		callee, err := w.lan.ListenEndpoint(ctx, "callee", "callee")
		if err != nil {
			t.Fatal(err)
		}
		pace := harness.Pace{Count: handoverStream, Interval: mediaInterval}
		errs := make(chan error, 4)
		go func() { _, err := caller.SendRTP(ctx, local, pace); errs <- err }()
		go func() { _, err := caller.SendRTCP(ctx, harness.RTCPOf(local), pace); errs <- err }()
		go func() { _, err := callee.SendRTP(ctx, remote, pace); errs <- err }()
		go func() { _, err := callee.SendRTCP(ctx, harness.RTCPOf(remote), pace); errs <- err }()
		for range 4 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		// Until the last datagram of each stream arrived (bounded: a
		// lost last one is lost, and the checks below say so).
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		_ = callee.WaitRTPThrough(wctx, "caller", handoverStream)
		_ = callee.WaitRTCPThrough(wctx, "caller", handoverStream)
		_ = caller.WaitRTPThrough(wctx, "callee", handoverStream)
		_ = caller.WaitRTCPThrough(wctx, "callee", handoverStream)
		wcancel()
		caller.Close()
		callee.Close()
		for _, s := range []stream{{name: "caller->callee RTP", to: callee, from: "caller"}, {name: "caller->callee RTCP", to: callee, from: "caller", rtcp: true},
			{name: "callee->caller RTP", to: caller, from: "callee"}, {name: "callee->caller RTCP", to: caller, from: "callee", rtcp: true}} {
			st, missing := s.to.RTPStats(), s.to.MissingRTP(s.from, handoverStream)
			if s.rtcp {
				st, missing = s.to.RTCPStats(), s.to.MissingRTCP(s.from, handoverStream)
			}
			src := st.Sources[s.from]
			s.received = src.Packets
			byCall[id] = append(byCall[id], s)
			if (len(missing) > 0 && missing[len(missing)-1] >= latchRegion) || src.Duplicates != 0 || len(st.Sources) != 1 {
				t.Errorf("%s %s: missing %v (only the first %d may be), %d duplicates, %d senders", id, s.name, missing, latchRegion, src.Duplicates, len(st.Sources))
			}
			for _, from := range src.From {
				if from.Addr() != local.Addr() {
					t.Errorf("%s %s received from %s, not from the relay", id, s.name, from)
				}
			}
		}
	}
	if err := rd.Stop(); err != nil {
		t.Fatalf("relayd did not stop cleanly: %v", err)
	}
	for id, streams := range byCall {
		end, err := rd.WaitLog(ctx, "channel ended", 1, func(r harness.LogRecord) bool { return r.Str("channel") == id })
		if err != nil {
			t.Fatal(err)
		}
		l2r, r2l := end.Int("packets_local_to_remote"), end.Int("packets_remote_to_local")
		latchDrops := end.Int("dropped_peer_not_latched") + end.Int("dropped_unconfirmed_peer")
		got := [2]int64{int64(streams[0].received + streams[1].received), int64(streams[2].received + streams[3].received)}
		// Everything sent was forwarded (and arrived) or dropped while
		// latching; the kernel forwarded all but the first few.
		if l2r != got[0] || r2l != got[1] || l2r+r2l+latchDrops != 4*handoverStream ||
			end.Int("kernel_packets_local_to_remote") < 2*(handoverStream-latchRegion) || end.Int("kernel_packets_remote_to_local") < 2*(handoverStream-latchRegion) {
			t.Errorf("%s: relayd forwarded %d/%d (received %d/%d), dropped %d while latching, of %d sent: %v", id, l2r, r2l, got[0], got[1], latchDrops, 4*handoverStream, end)
		}
	}
}
