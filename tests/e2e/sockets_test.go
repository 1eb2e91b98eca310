package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/kernel"
	"github.com/jnrelay/jnrelay/relayd/daemon"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// TestSocketsAuto is channel.sockets auto, the default (left unset here),
// on both sides of its choice. relayd as root (CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW) steers its ports,
// says so in `relayd status`, and an attack on a call is dropped in the
// kernel by the steered ports' shield, and with the fast path on auto
// the eBPF program forwards a steered call; relayd as an unprivileged user
// without capabilities keeps a socket per port and says why.
func TestSocketsAuto(t *testing.T) {
	harness.RequireRoot(t)
	if err := kernel.SteeringAvailable(); kernel.SteeringUnsupported(err) {
		t.Skipf("steered ports unavailable on this host (BPF sk_lookup): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jna", "relay", "caller", "callee", "evil")
	srv := startServer(ctx, t, "prosody", lan.NS("relay"), map[string]string{user: password})
	w := &world{lan: lan, srv: srv, req: srv.Requester(user, password)} // sockets: the default

	t.Run("root-steers", func(t *testing.T) {
		rd := startRelayd(t, lan.NS("relay"), w.relayConfig())
		if _, err := rd.WaitLog(ctx, "channel.sockets auto: steered", 1, nil); err != nil {
			t.Fatal(err)
		}
		st := socketsOf(ctx, t, rd)
		if st.Mode != "auto" || st.Active != "steered" || st.Why == "" {
			t.Fatalf("status sockets %+v, want auto running steered, with a reason", st)
		}
		if err := rd.Stop(); err != nil {
			t.Fatal(err)
		}
		// An attack on a call: every datagram counted, the flood's tail
		// dropped by the steered ports' shield in the kernel.
		t.Run("intruder", w.testIntruder)
	})

	// With the fast path on auto, auto steers and the eBPF fast path
	// forwards the call's legs (what a relayd with the capabilities runs).
	t.Run("root-steers-with-ebpf", func(t *testing.T) {
		we := &world{lan: lan, srv: srv, req: w.req, sockets: config.SocketsAuto, fastPath: "auto"}
		we.forwarding(t, true)
		defer we.forwarding(t, false)
		t.Run("call", we.testCall) // every media packet forwarded by the kernel
		withEBPF := func(r harness.LogRecord) bool { return strings.Contains(r.Str("why"), "eBPF fast path") }
		if we.rd.Count("channel.sockets auto: steered", withEBPF) != 1 {
			t.Fatalf("auto did not choose steered ports with the eBPF fast path:\n%s", we.rd.Logs())
		}
	})

	t.Run("unprivileged-per-port", func(t *testing.T) {
		dir := reachableDir(t)
		bin := filepath.Join(dir, "relayd")
		if err := copyFile(relaydBin, bin, 0o755); err != nil {
			t.Fatal(err)
		}
		rd := keepRelayd(t)(harness.StartRelaydAs(unprivilegedUID, bin, lan.NS("relay"), dir, w.relayConfig()))
		rec, err := rd.WaitLog(ctx, "channel.sockets auto: per_port", 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		if why := rec.Str("why"); !strings.Contains(why, "sk_lookup") {
			t.Errorf("logged why %q, want the missing sk_lookup privilege", why)
		}
		st := socketsOf(ctx, t, rd)
		if st.Mode != "auto" || st.Active != "per_port" || !strings.Contains(st.Why, "sk_lookup") {
			t.Fatalf("status sockets %+v, want auto running per_port for want of sk_lookup", st)
		}
	})
}

// socketsOf is relayd's status "sockets", once its API listens.
func socketsOf(ctx context.Context, t *testing.T, rd *harness.Relayd) daemon.SocketsStatus {
	t.Helper()
	if _, err := rd.WaitLog(ctx, "provisioning API listening", 1, nil); err != nil {
		t.Fatal(err)
	}
	s, err := rd.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s.Sockets
}
