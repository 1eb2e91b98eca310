// Package chaos throws failures at a running relay — its uplink cut, its
// state directory full, its file descriptors exhausted, itself killed
// mid-call — and checks the outcome each has in docs/reliability.md.
// Everything runs in network namespaces on TEST-NET addresses, bounded in
// count and time.
package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/provision"
	"github.com/jnrelay/jnrelay/relayd/daemon"
	"github.com/jnrelay/jnrelay/tests/harness"
)

const user, password = "alice", "alicepw"

var relaydBin = os.Getenv("RELAYD_BIN")

// rig is a relay host (203.0.113.1, Prosody on its loopback), a caller
// and a callee, and relayd registered as a component.
type rig struct {
	t     *testing.T
	lan   *harness.LAN
	srv   *harness.XMPPServer
	req   harness.Requester
	dir   string // relayd's configuration and state directory
	cfg   config.Config
	relay *harness.Relayd
}

func newRig(ctx context.Context, t *testing.T, prefix string, edit func(*config.Config)) *rig {
	t.Helper()
	r := newRigDeferred(ctx, t, prefix)
	if edit != nil {
		edit(&r.cfg)
	}
	r.start(ctx, r.cfg)
	return r
}

// start runs relayd from cfg (nil: the file already in the directory) and
// waits until it is registered.
func (r *rig) start(ctx context.Context, cfg any) {
	r.t.Helper()
	rd, err := harness.StartRelaydArgs(relaydBin, r.lan.NS("relay"), r.dir, cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() {
		rd.Stop()
		if r.t.Failed() {
			r.t.Logf("relayd logs:\n%s", rd.Logs())
		}
	})
	for _, msg := range []string{"xmpp component online", "provisioning API listening"} {
		if _, err := rd.WaitLog(ctx, msg, 1, nil); err != nil {
			r.t.Fatal(err)
		}
	}
	r.relay = rd
}

// call is a latched channel between the caller and the callee.
type call struct {
	id             string
	local, remote  netip.AddrPort
	caller, callee *harness.Endpoint
}

func (r *rig) call(ctx context.Context) *call {
	r.t.Helper()
	outs, err := r.req.Run(ctx, harness.RequestArgs{})
	if err != nil || len(outs) != 1 || outs[0].Type != "result" {
		r.t.Fatalf("channel request: %+v %v", outs, err)
	}
	local, remote, err := outs[0].RelayAddrs()
	if err != nil {
		r.t.Fatal(err)
	}
	c := &call{id: outs[0].Channel["id"], local: local, remote: remote}
	if c.caller, err = r.lan.ListenEndpoint(ctx, "caller", "caller"); err != nil {
		r.t.Fatal(err)
	}
	if c.callee, err = r.lan.ListenEndpoint(ctx, "callee", "callee"); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.caller.Close(); c.callee.Close() })
	if _, _, err := harness.Latch(ctx, c.caller, c.callee, local, remote); err != nil {
		r.t.Fatal(err)
	}
	return c
}

// exchange sends n RTP packets each way and waits until all arrived.
func (c *call) exchange(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	before := [2]int{c.callee.RTPStats().Sources["caller"].Packets, c.caller.RTPStats().Sources["callee"].Packets}
	pace := harness.Pace{Count: n, Interval: 2 * time.Millisecond}
	errs := make(chan error, 2)
	go func() { _, err := c.caller.SendRTP(ctx, c.local, pace); errs <- err }()
	go func() { _, err := c.callee.SendRTP(ctx, c.remote, pace); errs <- err }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second) // an upper bound: returns once all arrived
	defer cancel()
	if err := c.callee.WaitRTP(wctx, "caller", before[0]+n); err != nil {
		t.Fatal(err)
	}
	if err := c.caller.WaitRTP(wctx, "callee", before[1]+n); err != nil {
		t.Fatal(err)
	}
}

// TestUplinkCut cuts the relay's network link for 3 s during a call: what
// is sent meanwhile is lost on the wire, the channel outlives the cut (its
// expiry is 60 s), and the call goes on unchanged after the link is back.
func TestUplinkCut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := newRig(ctx, t, "jxu", nil)
	c := r.call(ctx)
	c.exchange(ctx, t, 50)

	if out, err := r.lan.Command(ctx, "relay", "ip", "link", "set", "br0", "down").CombinedOutput(); err != nil {
		t.Fatalf("cut: %v: %s", err, out)
	}
	lost := harness.Pace{Count: 150, Interval: 20 * time.Millisecond} // 3 s of media into the void
	if _, err := c.caller.SendRTP(ctx, c.local, lost); err != nil && !isNetDown(err) {
		t.Fatal(err)
	}
	if out, err := r.lan.Command(ctx, "relay", "ip", "link", "set", "br0", "up").CombinedOutput(); err != nil {
		t.Fatalf("restore: %v: %s", err, out)
	}
	c.exchange(ctx, t, 50) // every packet after the cut arrives
	if r.relay.Exited() {
		t.Fatal("relayd exited")
	}
	st := status(ctx, t, r.relay)
	if st.Channels.Active != 1 {
		t.Fatalf("%d channels after the cut, want the call's 1", st.Channels.Active)
	}
}

func isNetDown(err error) bool {
	return strings.Contains(err.Error(), "network is unreachable") || strings.Contains(err.Error(), "no route")
}

func status(ctx context.Context, t *testing.T, rd *harness.Relayd) daemon.Status {
	t.Helper()
	st, err := rd.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

// TestStateDirectoryFull fills the file system of relayd's configuration
// and state (a 1 MiB tmpfs): a configuration change is refused with
// persist_failed and nothing changes — not the running configuration,
// not the file — the relay keeps relaying, and once there is room the
// same change goes through.
func TestStateDirectoryFull(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	harness.RequireRoot(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "jnrelay-chaos", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	r := newRigIn(ctx, t, "jxf", dir)
	c := r.call(ctx)
	c.exchange(ctx, t, 20)
	before, err := os.ReadFile(filepath.Join(dir, "relayd.json"))
	if err != nil {
		t.Fatal(err)
	}

	filler := filepath.Join(dir, "filler")
	fill := exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=64k")
	if out, err := fill.CombinedOutput(); err == nil || !strings.Contains(string(out), "No space left") {
		t.Fatalf("filling the tmpfs: %v: %s", err, out)
	}
	api := provision.NewClient(r.relay.APISocket)
	defer api.Close()
	_, etag, err := api.GetConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = api.PatchConfig(ctx, []byte(`{"channel": {"max_kbps": 777}}`), etag)
	var apiErr *provision.Error
	if !errors.As(err, &apiErr) || apiErr.Code != provision.CodePersistFailed {
		t.Fatalf("change on a full disk: %v, want %s", err, provision.CodePersistFailed)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "relayd.json"))
	if string(after) != string(before) {
		t.Fatalf("configuration file changed on a full disk:\n%s", after)
	}
	// The field itself, decoded: the document holds random port numbers
	// (the XMPP server's) that may contain any digits.
	cur, _, err := api.GetConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	running, err := config.Parse(bytes.NewReader(cur))
	if err != nil || running.Channel.MaxKbps == 777 {
		t.Fatalf("running configuration after the refused change: %+v %v\n%s", running.Channel, err, cur)
	}
	c.exchange(ctx, t, 20) // relaying never depended on the disk

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	_, etag, _ = api.GetConfig(ctx)
	if _, err := api.PatchConfig(ctx, []byte(`{"channel": {"max_kbps": 777}}`), etag); err != nil {
		t.Fatalf("the same change with room again: %v", err)
	}
	saved, err := config.Load(filepath.Join(dir, "relayd.json"))
	if err != nil || saved.Channel.MaxKbps != 777 {
		t.Fatalf("saved %+v %v", saved.Channel, err)
	}
}

// newRigIn is newRig with relayd's directory given (a mount point).
func newRigIn(ctx context.Context, t *testing.T, prefix, dir string) *rig {
	t.Helper()
	r := newRigDeferred(ctx, t, prefix)
	r.dir = dir
	r.start(ctx, r.cfg)
	return r
}

// newRigDeferred builds the network, server and configuration but does
// not start relayd.
func newRigDeferred(ctx context.Context, t *testing.T, prefix string) *rig {
	t.Helper()
	harness.RequireRoot(t)
	if relaydBin == "" {
		t.Fatal("RELAYD_BIN is not set (make test sets it)")
	}
	r := &rig{t: t, lan: harness.NewLAN(t, prefix, "relay", "caller", "callee", "evil"), dir: t.TempDir()}
	srv, err := harness.StartProsody(ctx, harness.ServerOptions{Netns: r.lan.NS("relay"), Users: map[string]string{user: password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	r.srv, r.req = srv, srv.Requester(user, password)
	r.cfg = config.Default()
	r.cfg.PublicAddress = r.lan.Addr("relay").String()
	r.cfg.Ports = config.PortRange{Min: 40000, Max: 40099}
	r.cfg.Limits.MaxChannelsPerDomain = -1 // one user: the domain share is not what these tests are about
	r.cfg.Reconnect = config.Reconnect{MinSeconds: 0.2, MaxSeconds: 1}
	r.cfg.XMPP = []config.Service{{Name: srv.Kind, Type: "component", Server: srv.Component.String(),
		Domain: srv.ComponentDomain, Secret: srv.Secret}}
	return r
}

// TestFileDescriptorsExhausted lowers relayd's open-file limit under a
// live call until no channel fits: requests get resource-constraint, the
// call and the API go on, and with the limit raised again channels are
// granted.
func TestFileDescriptorsExhausted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A socket per port: steered ports (auto's choice as root) cost a
	// channel no descriptors, so this limit would not bite.
	r := newRig(ctx, t, "jxd", func(c *config.Config) { c.Channel.Sockets = config.SocketsPerPort })
	c := r.call(ctx)
	c.exchange(ctx, t, 20)
	pid := strconv.Itoa(r.relay.PID())
	open, err := os.ReadDir("/proc/" + pid + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	// The soft limit only (raising a hard limit back needs a privilege a
	// container may lack): room for what is open now plus two, not the
	// four sockets of a channel.
	hard, err := exec.Command("prlimit", "--pid", pid, "--nofile", "--output=HARD", "--noheadings").Output()
	if err != nil {
		t.Fatalf("prlimit: %v", err)
	}
	limit := strconv.Itoa(len(open) + 2)
	if out, err := exec.Command("prlimit", "--pid", pid, "--nofile="+limit+":").CombinedOutput(); err != nil {
		t.Fatalf("prlimit: %v: %s", err, out)
	}
	outs, err := r.req.Run(ctx, harness.RequestArgs{})
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 1 || outs[0].Type != "error" || outs[0].Condition != "resource-constraint" || outs[0].ErrorType != "wait" {
		t.Fatalf("request with no descriptors left: %+v, want wait/resource-constraint", outs)
	}
	c.exchange(ctx, t, 20) // the call goes on
	if out, err := exec.Command("prlimit", "--pid", pid, "--nofile="+strings.TrimSpace(string(hard))+":").CombinedOutput(); err != nil {
		t.Fatalf("prlimit: %v: %s", err, out)
	}
	outs, err = r.req.Run(ctx, harness.RequestArgs{})
	if err != nil || len(outs) != 1 || outs[0].Type != "result" {
		t.Fatalf("request with descriptors again: %+v %v", outs, err)
	}
	if st := status(ctx, t, r.relay); st.Channels.Active != 2 {
		t.Fatalf("%d channels, want 2", st.Channels.Active)
	}
}

// TestKilledMidCall SIGKILLs relayd during a call and starts it again: the
// call's channel is gone (its ports close with the process, and nobody
// could tell the requester), the new relayd registers and grants a
// channel at once — from the same port range, nothing left bound.
func TestKilledMidCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := newRig(ctx, t, "jxk", func(c *config.Config) { c.Ports = config.PortRange{Min: 40000, Max: 40003} }) // one channel
	c := r.call(ctx)
	c.exchange(ctx, t, 20)
	if err := r.relay.Kill(); err != nil {
		t.Fatal(err)
	}
	r.start(ctx, nil)
	outs, err := r.req.Run(ctx, harness.RequestArgs{})
	if err != nil || len(outs) != 1 || outs[0].Type != "result" {
		t.Fatalf("channel after the restart: %+v %v", outs, err)
	}
	if outs[0].Channel["localport"] != fmt.Sprint(c.local.Port()) {
		t.Fatalf("the only block %d was not free again: got %s", c.local.Port(), outs[0].Channel["localport"])
	}
	if outs[0].Channel["id"] == c.id {
		t.Fatal("the new channel reuses the old id")
	}
}
