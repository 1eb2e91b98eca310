// Package image boots jnrelay's arm64 test image (image/arm64, see
// docs/image.md) in qemu-system-aarch64 under emulation and proves that
// relayd works on it end to end: from the host a STUN binding is answered,
// relayd registers as a component with a Prosody on the host (reached
// through qemu's user network at 10.0.2.2), and a channel relays RTP and
// RTCP host → guest → host both ways.
//
// The image is built by make image-arm64; make test-image builds it and runs
// this test with JNRELAY_IMAGE_DIR pointing at it and JNRELAY_REQUIRE_IMAGE=1
// (then a missing qemu or image fails instead of skipping).
//
// Network: the guest's only link is qemu's user network. The host reaches the
// guest through ports qemu forwards from 127.0.0.1 (STUN and the relay's four
// channel ports, nothing else), and the guest reaches only the host's
// loopback services through 10.0.2.2.
package image

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/tests/harness"
)

const (
	user, password = "alice", "alicepw"
	// guestSTUN is relayd's STUN port inside the guest.
	guestSTUN = 3478
	// hostAlias is the host as the guest sees it on qemu's user network.
	hostAlias = "10.0.2.2"
	// media is how many RTP and RTCP packets each party sends after
	// latching.
	media = 100
	// imageExpire is relayd's channel expiry in the guest: short, so the
	// one-channel pool is free again soon after a subtest's call.
	imageExpire = 5
)

var loopback = netip.MustParseAddr("127.0.0.1")

// image returns the directory with vmlinuz and initrd.gz and the qemu
// binary, or skips (fails when JNRELAY_REQUIRE_IMAGE=1) if either is missing.
func image(t *testing.T) (dir, qemu string) {
	t.Helper()
	require := os.Getenv("JNRELAY_REQUIRE_IMAGE") == "1"
	missing := func(format string, args ...any) {
		t.Helper()
		if require {
			t.Fatalf(format+" (JNRELAY_REQUIRE_IMAGE=1)", args...)
		}
		t.Skipf(format+"; make test-image builds the image and runs this test", args...)
	}
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		missing("qemu-system-aarch64 not found (Debian package qemu-system-arm): %v", err)
	}
	dir = os.Getenv("JNRELAY_IMAGE_DIR")
	if dir == "" {
		missing("JNRELAY_IMAGE_DIR is not set (make image-arm64 writes the image to bin/image-arm64)")
	}
	for _, f := range []string{"vmlinuz", "initrd.gz"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			missing("image incomplete: %v", err)
		}
	}
	return dir, qemu
}

// vm is one qemu-system-aarch64 run of the image.
type vm struct {
	cmd     *exec.Cmd
	console *console
	stdin   io.WriteCloser // the guest's serial console input
	started time.Time
	exited  chan struct{} // closed when qemu has exited; err is set then
	err     error
}

// forward is a UDP port qemu forwards from the host's 127.0.0.1 to the guest.
type forward struct{ host, guest uint16 }

// boot starts qemu with the image, relayd configuration cfg (passed on the
// kernel command line) and the UDP forwards. qemu is killed at cleanup, and
// the console is logged if the test failed.
func boot(t *testing.T, dir, qemu string, cfg []byte, fwds []forward, kernelArgs ...string) *vm {
	t.Helper()
	netdev := "user,id=n0,ipv6=off"
	for _, f := range fwds {
		netdev += fmt.Sprintf(",hostfwd=udp:127.0.0.1:%d-:%d", f.host, f.guest)
	}
	appendLine := strings.Join(append([]string{"console=ttyAMA0 quiet panic=-1"}, kernelArgs...), " ") +
		" jnrelay.config=" + base64.StdEncoding.EncodeToString(cfg)
	args := []string{
		"-M", "virt", "-cpu", "cortex-a53", "-m", "256", "-nographic", "-no-reboot",
		"-kernel", filepath.Join(dir, "vmlinuz"), "-initrd", filepath.Join(dir, "initrd.gz"),
		"-append", appendLine,
		"-netdev", netdev, "-device", "virtio-net-pci,netdev=n0,romfile=",
	}
	cmd := exec.Command(qemu, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout // qemu's own errors go to the console log too
	v := &vm{cmd: cmd, stdin: stdin, exited: make(chan struct{})}
	t.Logf("boot: %s %s", qemu, strings.Join(args, " "))
	v.started = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	v.console = newConsole(out)
	go func() {
		// Wait only after the console reached EOF: Wait closes the pipe.
		_, _ = v.console.wait(context.Background(), "the end of the console", func(string) bool { return false })
		v.err = cmd.Wait()
		close(v.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-v.exited:
		case <-time.After(30 * time.Second):
			t.Errorf("qemu (pid %d) did not exit after SIGKILL", cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("guest console:\n%s", v.console.String())
		}
	})
	return v
}

// since is the time since qemu started.
func (v *vm) since() time.Duration { return time.Since(v.started).Round(10 * time.Millisecond) }

// freeRelayPorts finds four consecutive free UDP ports on 127.0.0.1 starting
// at an even one, below the ephemeral range (so sockets the system hands out
// cannot take them) and away from the ranges of other suites.
func freeRelayPorts(t *testing.T) uint16 {
	t.Helper()
	for range 100 {
		base := uint16(22000 + 2*rand.IntN(2000)) // 22000-25998
		var conns []*net.UDPConn
		for p := base; p < base+4; p++ {
			c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, p)))
			if err != nil {
				break
			}
			conns = append(conns, c)
		}
		for _, c := range conns {
			c.Close()
		}
		if len(conns) == 4 {
			return base
		}
	}
	t.Fatal("no four consecutive free UDP ports in 22000-25999 on 127.0.0.1")
	return 0
}

// freeUDPPort returns a UDP port of 127.0.0.1 that was free a moment ago.
func freeUDPPort(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
}

func TestArm64Image(t *testing.T) {
	dir, qemu := image(t)
	testStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	srv := startProsody(ctx, t)
	base := freeRelayPorts(t)
	stunHost := freeUDPPort(t)
	cfg := imageConfig(srv, base)
	cfg.STUN.Enabled, cfg.STUN.Port = true, guestSTUN
	v := boot(t, dir, qemu, marshal(t, cfg), append(channelForwards(base), forward{stunHost, guestSTUN}))

	bootCtx, bootCancel := context.WithTimeout(ctx, 90*time.Second)
	defer bootCancel()
	if _, err := v.console.wait(bootCtx, "init's network", func(l string) bool {
		return strings.HasPrefix(l, "init: ") && strings.Contains(l, "network up")
	}); err != nil {
		t.Fatal(err)
	}
	netUp := v.since()
	if _, err := v.console.waitLog(bootCtx, "stun serving"); err != nil {
		t.Fatal(err)
	}
	stunUp := v.since()
	if _, err := v.console.waitLog(bootCtx, "xmpp component online"); err != nil {
		t.Fatal(err)
	}
	online := v.since()
	t.Logf("boot: guest network up %s after qemu started, relayd's STUN serving at %s, component online with the host's Prosody at %s", netUp, stunUp, online)

	t.Run("stun", func(t *testing.T) {
		checkSTUN(t, netip.AddrPortFrom(loopback, stunHost))
	})
	t.Run("channel", func(t *testing.T) {
		checkChannel(ctx, t, srv, base)
	})
	t.Run("clock-steps", func(t *testing.T) {
		checkClockSteps(ctx, t, v, srv, base)
	})
	t.Logf("test time: %s (boot to component online %s)", time.Since(testStart).Round(10*time.Millisecond), online)
}

// startProsody starts the private Prosody on the host's loopback, closed
// at cleanup (its logs printed if the test failed).
func startProsody(ctx context.Context, t *testing.T) *harness.XMPPServer {
	t.Helper()
	srv, err := harness.StartProsody(ctx, harness.ServerOptions{Users: map[string]string{user: password}})
	if err != nil {
		t.Fatalf("start prosody: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("prosody logs:\n%s", srv.Logs())
		}
		srv.Close()
	})
	return srv
}

// imageConfig is relayd's configuration in the guest: one channel on the
// four ports from base, the component at the host's Prosody, JSON logs.
func imageConfig(srv *harness.XMPPServer, base uint16) config.Config {
	cfg := config.Default()
	// Channel results must carry the address the host's parties reach:
	// qemu forwards 127.0.0.1:P to the guest's P for each channel port.
	cfg.PublicAddress = loopback.String()
	cfg.ListenAddress = "0.0.0.0"
	cfg.Ports = config.PortRange{Min: int(base), Max: int(base) + 3}
	cfg.STUN.Enabled = false
	cfg.Reconnect = config.Reconnect{MinSeconds: 0.2, MaxSeconds: 1}
	cfg.Log.Format = "json"
	cfg.Channel.ExpireSeconds = imageExpire
	cfg.XMPP = []config.Service{{Name: "host-prosody", Type: "component",
		Server: netip.AddrPortFrom(netip.MustParseAddr(hostAlias), srv.Component.Port()).String(),
		Domain: srv.ComponentDomain, Secret: srv.Secret}}
	return cfg
}

// channelForwards forwards the channel's four ports with their numbers.
func channelForwards(base uint16) []forward {
	var fwds []forward
	for p := base; p < base+4; p++ {
		fwds = append(fwds, forward{p, p})
	}
	return fwds
}

func marshal(t *testing.T, cfg config.Config) []byte {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// checkSTUN sends a Binding request to relayd's STUN server through the
// forwarded port. The guest sees the request come from qemu's host alias with
// the client's own port (qemu's user network keeps source ports), so that is
// what XOR-MAPPED-ADDRESS must say.
func checkSTUN(t *testing.T, server netip.AddrPort) {
	conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(server))
	if err != nil {
		t.Fatal(err)
	}
	local := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	mapped, err := harness.STUNBinding(conn) // retransmits; closes conn
	if err != nil {
		t.Fatalf("STUN binding to %s: %v", server, err)
	}
	want := netip.AddrPortFrom(netip.MustParseAddr(hostAlias), local.Port())
	if mapped != want {
		t.Errorf("XOR-MAPPED-ADDRESS %s, want %s (qemu's host alias, the client's port)", mapped, want)
	}
	t.Logf("STUN via 127.0.0.1:%d: mapped %s", server.Port(), mapped)
}

// loopbackParties opens the caller's and the callee's endpoints on the
// host's loopback, closed at cleanup.
func loopbackParties(ctx context.Context, t *testing.T) (caller, callee *harness.Endpoint) {
	t.Helper()
	for _, ep := range []struct {
		tag string
		to  **harness.Endpoint
	}{{"caller", &caller}, {"callee", &callee}} {
		e, err := harness.ListenEndpoint(ctx, "", loopback, ep.tag)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		*ep.to = e
	}
	return caller, callee
}

// call is a channel's two parties and the relay addresses each sends to.
type call struct {
	caller, callee *harness.Endpoint
	local, remote  netip.AddrPort
	sent           *[4]int // per stream: caller RTP, caller RTCP, callee RTP, callee RTCP
}

// checkChannel asks for a channel with the third-party requester and relays
// RTP and RTCP between two endpoints on the host's loopback through it.
func checkChannel(ctx context.Context, t *testing.T, srv *harness.XMPPServer, base uint16) call {
	outs, err := srv.Requester(user, password).Run(ctx, harness.RequestArgs{})
	if err != nil {
		t.Fatalf("channel request: %v", err)
	}
	if len(outs) != 1 || outs[0].Type != "result" {
		t.Fatalf("channel request: %+v", outs)
	}
	local, remote, err := outs[0].RelayAddrs()
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.AddrPortFrom(loopback, base); local != want || remote != netip.AddrPortFrom(loopback, base+2) {
		t.Fatalf("channel %+v: want host 127.0.0.1, localport %d, remoteport %d", outs[0].Channel, base, base+2)
	}
	t.Logf("channel %s: %s / %s", outs[0].Channel["id"], local, remote)

	caller, callee := loopbackParties(ctx, t)
	callerProbes, calleeProbes, err := harness.Latch(ctx, caller, callee, local, remote)
	if err != nil {
		t.Fatal(err)
	}
	// The relay forwards only once both sides latched, so only those first
	// packets may be missing; each of the next ones must arrive once.
	pace := harness.Pace{Count: media, Interval: 2 * time.Millisecond}
	errs := make(chan error, 4)
	go func() { _, err := caller.SendRTP(ctx, local, pace); errs <- err }()
	go func() { _, err := caller.SendRTCP(ctx, harness.RTCPOf(local), pace); errs <- err }()
	go func() { _, err := callee.SendRTP(ctx, remote, pace); errs <- err }()
	go func() { _, err := callee.SendRTCP(ctx, harness.RTCPOf(remote), pace); errs <- err }()
	var sendErr error
	for range 4 {
		sendErr = errors.Join(sendErr, <-errs)
	}
	if sendErr != nil {
		t.Fatal(sendErr)
	}
	sent := [4]int{callerProbes + media, callerProbes + media, calleeProbes + media, calleeProbes + media}
	maxMissing := [4]int{callerProbes, callerProbes, calleeProbes, calleeProbes}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// Wait, packet by packet, until each socket has received its sender's
	// last packet: then Packets+Lost accounts for everything sent (Lost
	// counts the sequence numbers missing below the highest one).
	for _, w := range []struct {
		name  string
		stats func() harness.Stats
		wait  func(context.Context, string, int) error
		peer  string
		sent  int
	}{
		{"callee RTP", callee.RTPStats, callee.WaitRTP, "caller", sent[0]},
		{"callee RTCP", callee.RTCPStats, callee.WaitRTCP, "caller", sent[1]},
		{"caller RTP", caller.RTPStats, caller.WaitRTP, "callee", sent[2]},
		{"caller RTCP", caller.RTCPStats, caller.WaitRTCP, "callee", sent[3]},
	} {
		for {
			src := w.stats().Sources[w.peer]
			if src.Packets+src.Lost >= w.sent {
				break
			}
			if err := w.wait(wctx, w.peer, src.Packets+1); err != nil {
				t.Fatalf("%s: the last of %d packets from %s never arrived: %v", w.name, w.sent, w.peer, err)
			}
		}
	}
	for i, ep := range []struct {
		e          *harness.Endpoint
		kind, peer string
		stats      func() harness.Stats
	}{
		{callee, "RTP", "caller", callee.RTPStats}, {callee, "RTCP", "caller", callee.RTCPStats},
		{caller, "RTP", "callee", caller.RTPStats}, {caller, "RTCP", "callee", caller.RTCPStats},
	} {
		s := ep.stats()
		src := s.Sources[ep.peer]
		if src.Packets+src.Lost != sent[i] || src.Lost > maxMissing[i] || src.Duplicates != 0 ||
			s.Invalid != 0 || s.WrongKind != 0 || len(s.Sources) != 1 {
			t.Errorf("%s %s: %d packets from %s (sent %d, %d of them latching probes), %d lost, %d duplicates, %d invalid, %d wrong kind, %d sources",
				ep.e.Tag, ep.kind, src.Packets, ep.peer, sent[i], maxMissing[i], src.Lost, src.Duplicates, s.Invalid, s.WrongKind, len(s.Sources))
		}
		// Everything comes from the relay's forwarded ports, never from
		// the other party directly.
		for _, from := range src.From {
			if from.Addr() != loopback || from.Port() < base || from.Port() > base+3 {
				t.Errorf("%s %s received from %s, not from the relay's ports %d-%d", ep.e.Tag, ep.kind, from, base, base+3)
			}
		}
		t.Logf("%s %s: %d of %d packets from %s, median one-way %s", ep.e.Tag, ep.kind, src.Packets, sent[i], ep.peer, src.Latency(0.5))
	}
	return call{caller: caller, callee: callee, local: local, remote: remote, sent: &sent}
}

// TestArm64ImagePowersOffWhenRelaydExits boots the image with a relayd
// configuration that relayd refuses: init must report relayd's exit status
// and power the machine off, so qemu ends by itself.
func TestArm64ImagePowersOffWhenRelaydExits(t *testing.T) {
	dir, qemu := image(t)
	bad := []byte(`{"ports":{"min":5,"max":3},"xmpp":[]}`)
	v := boot(t, dir, qemu, bad, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	line, err := v.console.wait(ctx, "init reporting relayd's exit", func(l string) bool {
		return strings.HasPrefix(l, "init: ") && strings.Contains(l, "relayd exited")
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(line, "relayd exited: status "+strconv.Itoa(1)) {
		t.Errorf("init said %q, want relayd's exit status 1", line)
	}
	if _, err := v.console.wait(ctx, "relayd's reason", func(l string) bool { return strings.Contains(l, "ports.min") }); err != nil {
		t.Error(err)
	}
	select {
	case <-v.exited:
		t.Logf("qemu exited by itself %s after start (%v)", v.since(), v.err)
		if v.err != nil {
			t.Errorf("qemu: %v, want a clean exit after the guest powered off", v.err)
		}
	case <-ctx.Done():
		t.Fatal("the guest did not power off after relayd exited")
	}
}
