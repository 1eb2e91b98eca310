// Command demo shows calls going through relayd: a private Prosody on
// loopback, relayd registered with it as relay.localhost, a third-party
// client (python3-slixmpp) asking for a Jingle Nodes channel and two UDP
// endpoints exchanging RTP and RTCP through it; then two users fetching
// TURN credentials over XEP-0215 and exchanging packets through
// allocations on relayd's built-in TURN server (turn.go). It prints a
// summary of each and tears everything down, also on Ctrl-C. Run it with
// `make demo`.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/internal/testport"
	"github.com/jnrelay/jnrelay/tests/harness"
)

func main() {
	relayd := flag.String("relayd", "bin/relayd", "relayd binary")
	seconds := flag.Int("seconds", 3, "call duration")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, *relayd, time.Duration(*seconds)*time.Second); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "demo: interrupted, everything stopped")
		} else {
			fmt.Fprintln(os.Stderr, "demo:", err)
		}
		os.Exit(1)
	}
}

const (
	rtpInterval  = 20 * time.Millisecond // 50 packets/s, one 20 ms audio frame each
	rtcpInterval = time.Second
)

func run(ctx context.Context, out io.Writer, relaydBin string, duration time.Duration) error {
	if _, err := os.Stat(relaydBin); err != nil {
		return fmt.Errorf("relayd binary: %w (run make build)", err)
	}
	step := func(format string, args ...any) { fmt.Fprintf(out, "==> "+format+"\n", args...) }

	step("starting a private Prosody on loopback")
	users := map[string]string{"alice": "alicepw", "bob": "bobpw"}
	srv, err := harness.StartProsody(ctx, harness.ServerOptions{Users: users})
	if err != nil {
		return fmt.Errorf("start prosody: %w", err)
	}
	defer srv.Close()
	step("Prosody: c2s %s, component port %s, data in %s", srv.C2S, srv.Component, srv.Dir)

	dir, err := os.MkdirTemp("", "jnrelay-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := config.Default()
	cfg.PublicAddress, cfg.ListenAddress = "127.0.0.1", "127.0.0.1"
	cfg.Ports = config.PortRange{Min: 41000, Max: 41999}
	cfg.XMPP = []config.Service{{Type: "component", Server: srv.Component.String(), Domain: srv.ComponentDomain, Secret: srv.Secret}}
	cfg.TURN.Builtin.Enabled = true
	if cfg.TURN.Builtin.Port, err = testport.FindUDPAndTCP(); err != nil {
		return err
	}
	step("starting relayd as the component %s, its TURN server on 127.0.0.1:%d", srv.ComponentDomain, cfg.TURN.Builtin.Port)
	rd, err := harness.StartRelayd(relaydBin, "", dir, cfg)
	if err != nil {
		return err
	}
	defer rd.Stop()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, msg := range []string{"xmpp component online", "TURN server started"} {
		if _, err := rd.WaitLog(wctx, msg, 1, nil); err != nil {
			return fmt.Errorf("%w\nrelayd output:\n%s", err, rd.Logs())
		}
	}

	step("alice@localhost (python3-slixmpp) asks %s for a channel", srv.ComponentDomain)
	outs, err := srv.Requester("alice", "alicepw").Run(wctx, harness.RequestArgs{})
	if err != nil {
		return err
	}
	if len(outs) != 1 || outs[0].Type != "result" {
		return fmt.Errorf("channel request answered %+v", outs)
	}
	ch := outs[0].Channel
	local, remote, err := outs[0].RelayAddrs()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "    <channel id='%s' host='%s' localport='%s' remoteport='%s' protocol='%s' expire='%s'/>\n",
		ch["id"], ch["host"], ch["localport"], ch["remoteport"], ch["protocol"], ch["expire"])

	lo := netip.MustParseAddr("127.0.0.1")
	caller, err := harness.ListenEndpoint(ctx, "", lo, "caller")
	if err != nil {
		return err
	}
	defer caller.Close()
	callee, err := harness.ListenEndpoint(ctx, "", lo, "callee")
	if err != nil {
		return err
	}
	defer callee.Close()

	// Baseline: the same packets straight between the endpoints, to tell
	// the latency the relay adds from what loopback costs anyway.
	direct, err := directLatency(ctx, lo)
	if err != nil {
		return err
	}

	step("call: caller <-> %s:%d/%d <-> callee, RTP every %s and RTCP every %s, both ways, for %s",
		local.Addr(), local.Port(), remote.Port(), rtpInterval, rtcpInterval, duration)
	if _, _, err := harness.Latch(ctx, caller, callee, local, remote); err != nil {
		return err
	}
	before := snapshot(caller, callee)
	rtp := harness.Pace{Count: int(duration / rtpInterval), Interval: rtpInterval}
	rtcp := harness.Pace{Count: max(1, int(duration/rtcpInterval)), Interval: rtcpInterval}
	errs := make(chan error, 4)
	go func() { _, err := caller.SendRTP(ctx, local, rtp); errs <- err }()
	go func() { _, err := callee.SendRTP(ctx, remote, rtp); errs <- err }()
	go func() { _, err := caller.SendRTCP(ctx, harness.RTCPOf(local), rtcp); errs <- err }()
	go func() { _, err := callee.SendRTCP(ctx, harness.RTCPOf(remote), rtcp); errs <- err }()
	for range 4 {
		if err := <-errs; err != nil {
			return err
		}
	}
	// Wait (bounded) for the last packets in flight.
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	defer dcancel()
	_ = callee.WaitRTP(dctx, "caller", before.calleeRTP+rtp.Count)
	_ = caller.WaitRTP(dctx, "callee", before.callerRTP+rtp.Count)
	_ = callee.WaitRTCP(dctx, "caller", before.calleeRTCP+rtcp.Count)
	_ = caller.WaitRTCP(dctx, "callee", before.callerRTCP+rtcp.Count)
	after := snapshot(caller, callee)

	fmt.Fprintln(out)
	fmt.Fprintf(out, "Channel %s on %s: caller uses %d/%d, callee %d/%d (RTP/RTCP)\n",
		ch["id"], local.Addr(), local.Port(), local.Port()+1, remote.Port(), remote.Port()+1)
	report := func(dir string, sentRTP, sentRTCP int, got, was counts, s harness.SourceStats) {
		rtpGot, rtcpGot := got.rtp-was.rtp, got.rtcp-was.rtcp
		loss := 100 * float64(sentRTP+sentRTCP-rtpGot-rtcpGot) / float64(sentRTP+sentRTCP)
		fmt.Fprintf(out, "  %-16s RTP %3d/%3d packets %6d bytes, RTCP %d/%d packets %4d bytes, loss %.1f%%, median one-way %s\n",
			dir, rtpGot, sentRTP, got.rtpBytes-was.rtpBytes, rtcpGot, sentRTCP, got.rtcpBytes-was.rtcpBytes, loss,
			s.Latency(0.5).Round(time.Microsecond))
	}
	report("caller -> callee", rtp.Count, rtcp.Count, after.atCallee(), before.atCallee(), callee.RTPStats().Sources["caller"])
	report("callee -> caller", rtp.Count, rtcp.Count, after.atCaller(), before.atCaller(), caller.RTPStats().Sources["callee"])
	relayed := harness.Quantile(append(callee.RTPStats().Sources["caller"].Latencies, caller.RTPStats().Sources["callee"].Latencies...), 0.5)
	fmt.Fprintf(out, "  median latency added by the relay: %s (through relay %s, direct %s)\n",
		(relayed - direct).Round(time.Microsecond), relayed.Round(time.Microsecond), direct.Round(time.Microsecond))

	if err := turnCall(ctx, out, srv, rd, cfg.TURN.Builtin.Realm, users, duration); err != nil {
		return err
	}

	step("stopping relayd and Prosody")
	if err := rd.Stop(); err != nil {
		return fmt.Errorf("relayd did not stop cleanly: %w", err)
	}
	end, err := rd.WaitLog(ctx, "channel ended", 1, nil)
	if err == nil {
		fmt.Fprintf(out, "    relayd counted %d packets caller->callee, %d callee->caller, %d dropped before both sides latched\n",
			end.Int("packets_local_to_remote"), end.Int("packets_remote_to_local"), end.Int("dropped_peer_not_latched"))
	}
	return nil
}

// directLatency is the median one-way latency of packets sent straight
// between two loopback endpoints.
func directLatency(ctx context.Context, lo netip.Addr) (time.Duration, error) {
	a, err := harness.ListenEndpoint(ctx, "", lo, "direct-a")
	if err != nil {
		return 0, err
	}
	defer a.Close()
	b, err := harness.ListenEndpoint(ctx, "", lo, "direct-b")
	if err != nil {
		return 0, err
	}
	defer b.Close()
	const n = 100
	if _, err := a.SendRTP(ctx, b.RTPAddr(), harness.Pace{Count: n, Interval: time.Millisecond}); err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := b.WaitRTP(wctx, "direct-a", n); err != nil {
		return 0, err
	}
	return b.RTPStats().Sources["direct-a"].Latency(0.5), nil
}

type counts struct{ rtp, rtcp, rtpBytes, rtcpBytes int }

type callCounts struct {
	calleeRTP, calleeRTCP, callerRTP, callerRTCP                 int
	calleeRTPBytes, calleeRTCPBytes, callerRTPBytes, callerRTCPB int
}

func snapshot(caller, callee *harness.Endpoint) callCounts {
	a, b := callee.RTPStats().Sources["caller"], callee.RTCPStats().Sources["caller"]
	c, d := caller.RTPStats().Sources["callee"], caller.RTCPStats().Sources["callee"]
	return callCounts{a.Packets, b.Packets, c.Packets, d.Packets, a.Bytes, b.Bytes, c.Bytes, d.Bytes}
}

func (c callCounts) atCallee() counts {
	return counts{c.calleeRTP, c.calleeRTCP, c.calleeRTPBytes, c.calleeRTCPBytes}
}

func (c callCounts) atCaller() counts {
	return counts{c.callerRTP, c.callerRTCP, c.callerRTPBytes, c.callerRTCPB}
}
