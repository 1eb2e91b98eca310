package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/turn"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// relaydTURNC is relayd itself (the daemon, not dpbench) with its built-in
// TURN server, against which side a is a TURN client exactly as for
// coturn (one Allocate + ChannelBind per flow, then ChannelData), but
// authenticated: TURN REST credentials under the secret the runner gives
// relayd, as a browser given credentials over XEP-0215 would use them.
// Allocations take their relayed ports from relayd's data plane (the same
// port range as the others), with no fast path: every datagram goes
// through pion/turn and relayd's relay ports in userspace.
var relaydTURNC = &contender{key: "relayd-turn", name: "relayd (TURN)", start: startRelaydTURN}

const (
	relaydTURNPort   = 3479 // turn.builtin.port's default
	relaydTURNSecret = "bench-secret"
)

func startRelaydTURN(ctx context.Context, _ testing.TB, e *env, n int) (*relay, error) {
	bin, err := e.relaydBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(e.dir, "relayd-turn-")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "relayd.json")
	if err := writeRelaydTURNConfig(path); err != nil {
		return nil, err
	}
	// GOMAXPROCS=1 as for dpbench: the relay has one core.
	p, err := startProc(ctx, relayCore, e.topo.nsR, []string{"GOMAXPROCS=1"}, bin,
		"-config", path, "-state-dir", dir, "-api-socket", filepath.Join(dir, "api.sock"))
	if err != nil {
		return nil, err
	}
	server := netip.AddrPortFrom(relayAP, relaydTURNPort)
	if err := waitBinding(e, p, server); err != nil {
		return nil, err
	}
	// One credential for every flow: the requester limits are off (see
	// the configuration), so it stands for as many browsers.
	user := turn.Username(time.Now().Add(time.Hour), "bench")
	r := &relay{proc: p, turn: true, turnUser: user, turnPassword: turn.Password([]byte(relaydTURNSecret), user),
		cleanup: func() { _ = os.RemoveAll(dir) }}
	for range n {
		r.targetsA = append(r.targetsA, server)
	}
	return r, nil
}

// writeRelaydTURNConfig writes relayd's configuration: the relay address
// and port range every contender has, TURN on, the rest off (STUN, the
// fast path, XMPP), and no limit meant for the public (per requester, per
// domain) that would refuse thousands of allocations from one credential.
func writeRelaydTURNConfig(path string) error {
	cfg := config.Default()
	cfg.ListenAddress, cfg.PublicAddress = relayAddr, relayAddr
	cfg.Ports = config.PortRange{Min: relayPortMin, Max: relayPortMax}
	cfg.Channel.FastPath = config.FastPathOff
	cfg.Channel.DrainSeconds = 0
	cfg.STUN.Enabled = false
	cfg.TURN.Secret = relaydTURNSecret
	cfg.TURN.Builtin.Enabled = true
	cfg.TURN.Builtin.Port = relaydTURNPort
	cfg.TURN.Builtin.TCP = false
	cfg.Limits.PerJIDChannels, cfg.Limits.PerJIDRequestsPerMinute, cfg.Limits.MaxChannelsPerDomain = 0, 0, -1
	// Warnings only: an info line per allocation would be thousands of
	// lines while the generator sets up.
	cfg.Log = config.Log{Level: config.LogWarn, Format: config.LogJSON}
	doc, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, doc, 0o600)
}

// relaydBinary is $RELAYD_BIN (make bench, make test set it) or relayd
// built into the scratch directory on first use.
func (e *env) relaydBinary() (string, error) {
	if e.relayd != "" {
		return e.relayd, nil
	}
	if bin := os.Getenv("RELAYD_BIN"); bin != "" {
		e.relayd = bin
		return bin, nil
	}
	out := filepath.Join(e.dir, "relayd")
	cmd := exec.Command("go", "build", "-o", out, "../../relayd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build relayd: %v\n%s", err, msg)
	}
	e.relayd = out
	return out, nil
}

// waitBinding waits until server, run by p, answers a STUN Binding
// request (both TURN servers do). Each try retransmits for about 11 s, so
// a slow start is waited out, not raced. On failure p is stopped.
func waitBinding(e *env, p *proc, server netip.AddrPort) error {
	up := time.Now().Add(20 * time.Second)
	for {
		_, err := harness.STUNBindingIn(e.topo.nsR, netip.AddrPort{}, server)
		if err == nil {
			return nil
		}
		if time.Now().After(up) {
			_, _ = p.stop(10 * time.Second)
			return fmt.Errorf("%s never answered a Binding request at %s (%v); stderr: %s", p.name, server, err, p.stderr)
		}
	}
}
