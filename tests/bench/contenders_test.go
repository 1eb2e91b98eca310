package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/kernel"
)

// Relay port range of every contender, inside the relay namespace: 40,000
// ports, enough for 10,000 four-port channels.
const (
	relayPortMin = 20000
	relayPortMax = 59999
)

var relayAP = netip.MustParseAddr(relayAddr)

// baseline is no relay at all: the kernel forwards between the two sides
// (see topo). Its figures are the floor the others are compared with.
var baseline = &contender{key: "baseline", name: "kernel forwarding (baseline)",
	start: func(_ context.Context, _ testing.TB, e *env, n int) (*relay, error) {
		r := &relay{cleanup: func() { _ = e.topo.forwarding(false) }}
		for i := range n {
			r.targetsA = append(r.targetsA, endpoint(srcB, portBaseB, i))
			r.targetsB = append(r.targetsB, endpoint(srcA, portBaseA, i))
		}
		return r, e.topo.forwarding(true)
	}}

// relayd is relayd's data plane (relayd/channel) run by cmd/dpbench with
// GOMAXPROCS=1 on the relay core.
var relaydC = &contender{key: "relayd", name: "relayd", exact: true,
	start: func(ctx context.Context, _ testing.TB, e *env, n int) (*relay, error) {
		return startDpbench(ctx, e, n, "off")
	}}

// relaydFastC is relayd's data plane with the nftables fast path
// (kernel/nft): each leg is handed to nftables once both sides latched,
// so after the primes the relay process sees no media at all. Forwarding
// is on in the relay namespace for it (the fast path requires it); the
// "relay core" figures then are the kernel's work on that core.
var relaydFastC = &contender{key: "relayd-fastpath", name: "relayd fast path (nftables)", exact: true,
	start: func(ctx context.Context, _ testing.TB, e *env, n int) (*relay, error) {
		return startKernelPath(ctx, e, n, "nftables")
	}}

// relaydEBPFC is relayd's data plane with the eBPF fast path
// (kernel/tcfwd): a TC program on the relay's ingress rewrites and
// redirects each latched leg's datagrams.
var relaydEBPFC = &contender{key: "relayd-ebpf", name: "relayd fast path (eBPF)", exact: true,
	start: func(ctx context.Context, _ testing.TB, e *env, n int) (*relay, error) {
		return startKernelPath(ctx, e, n, "ebpf")
	}}

// startKernelPath runs dpbench with an in-kernel fast path, forwarding on
// in the relay namespace while it runs.
func startKernelPath(ctx context.Context, e *env, n int, mode string) (*relay, error) {
	if err := e.topo.forwarding(true); err != nil {
		return nil, err
	}
	r, err := startDpbench(ctx, e, n, mode)
	if err != nil {
		_ = e.topo.forwarding(false)
		return nil, err
	}
	r.cleanup = func() { _ = e.topo.forwarding(false) }
	return r, nil
}

// relaydSteeredC is relayd's data plane with steered ports: one socket
// for the whole range (BPF sk_lookup) and a raw socket to send, so its
// channels hold no file descriptors.
var relaydSteeredC = &contender{key: "relayd-steered", name: "relayd steered ports", exact: true, fdFree: true,
	start: func(ctx context.Context, _ testing.TB, e *env, n int) (*relay, error) {
		return startDpbench(ctx, e, n, "off", "-sockets", "steered")
	},
	available: func() string {
		if err := kernel.SteeringAvailable(); kernel.SteeringUnsupported(err) {
			return fmt.Sprintf("steered ports unavailable on this host (BPF sk_lookup): %v", err)
		}
		return ""
	}}

// startDpbench runs cmd/dpbench with n channels, the given fast path mode
// and any further flags on the relay core.
func startDpbench(ctx context.Context, e *env, n int, fastPath string, more ...string) (*relay, error) {
	ports := filepath.Join(e.dir, "dpbench-ports")
	args := append([]string{"-listen", relayAddr, "-port-min", strconv.Itoa(relayPortMin), "-port-max", strconv.Itoa(relayPortMax),
		"-channels", strconv.Itoa(n), "-ports", ports, "-fast-path", fastPath}, more...)
	p, err := startProc(ctx, relayCore, e.topo.nsR, []string{"GOMAXPROCS=1"}, e.dpbench, args...)
	if err != nil {
		return nil, err
	}
	return readyDpbench(p, ports)
}

// readyDpbench waits for dpbench's ready line and reads the channels'
// ports it wrote; on failure it stops p.
func readyDpbench(p *proc, ports string) (*relay, error) {
	r := &relay{proc: p, counters: dpbenchCounters}
	line, err := p.line(`{"ready"`, 120*time.Second)
	if err != nil {
		_, _ = p.stop(10 * time.Second)
		return nil, err
	}
	var ready struct {
		PerSec float64 `json:"allocs_per_second"`
	}
	if err := json.Unmarshal([]byte(line), &ready); err != nil {
		_, _ = p.stop(10 * time.Second)
		return nil, fmt.Errorf("dpbench ready line %q: %w", line, err)
	}
	r.allocPerSec = ready.PerSec
	if err := readPorts(ports, r); err != nil {
		_, _ = p.stop(10 * time.Second)
		return nil, err
	}
	return r, nil
}

func readPorts(path string, r *relay) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var local, remote uint16
		if _, err := fmt.Sscanf(sc.Text(), "%d %d", &local, &remote); err != nil {
			return fmt.Errorf("%s: %q: %w", path, sc.Text(), err)
		}
		r.targetsA = append(r.targetsA, netip.AddrPortFrom(relayAP, local))
		r.targetsB = append(r.targetsB, netip.AddrPortFrom(relayAP, remote))
	}
	return sc.Err()
}

func dpbenchCounters(lines []string) (relayed, dropped uint64, ok bool) {
	var fin struct {
		Relayed *uint64           `json:"relayed"`
		Dropped map[string]uint64 `json:"dropped"`
	}
	if lastJSON(lines, &fin) != nil || fin.Relayed == nil {
		return 0, 0, false
	}
	for _, v := range fin.Dropped {
		dropped += v
	}
	return *fin.Relayed, dropped, true
}

// crefC is the C reference limit, cref/relay.c.
var crefC = &contender{key: "cref", name: "C reference (epoll)", exact: true,
	start: func(ctx context.Context, _ testing.TB, e *env, n int) (*relay, error) {
		if e.cref == "" {
			return nil, errSkip("gcc is not installed (tests/bench/deps.sh installs it)")
		}
		p, err := startProc(ctx, relayCore, e.topo.nsR, nil, e.cref, relayAddr, strconv.Itoa(relayPortMin), strconv.Itoa(n))
		if err != nil {
			return nil, err
		}
		r := &relay{proc: p, counters: crefCounters}
		line, err := p.line("ready", 120*time.Second)
		if err != nil {
			_, _ = p.stop(10 * time.Second)
			return nil, err
		}
		if i := strings.Index(line, "setup_ns="); i >= 0 {
			if ns, err := strconv.ParseFloat(line[i+len("setup_ns="):], 64); err == nil && ns > 0 {
				r.allocPerSec = float64(n) / (ns / 1e9)
			}
		}
		for i := range n {
			base := uint16(relayPortMin + 4*i)
			r.targetsA = append(r.targetsA, netip.AddrPortFrom(relayAP, base))
			r.targetsB = append(r.targetsB, netip.AddrPortFrom(relayAP, base+2))
		}
		return r, nil
	}}

func crefCounters(lines []string) (relayed, dropped uint64, ok bool) {
	var fin struct {
		Relayed   *uint64 `json:"relayed"`
		Unlatched uint64  `json:"dropped_peer_not_latched"`
		Foreign   uint64  `json:"dropped_foreign_source"`
		SendErrs  uint64  `json:"send_errors"`
	}
	if lastJSON(lines, &fin) != nil || fin.Relayed == nil {
		return 0, 0, false
	}
	return *fin.Relayed, fin.Unlatched + fin.Foreign + fin.SendErrs, true
}

// errSkip marks a contender that cannot run on this machine; the runner
// reports it and goes on with the others.
type errSkip string

func (e errSkip) Error() string { return string(e) }
