package bench

import (
	"context"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// coturnC is coturn (Debian), one relay thread, no authentication. Its
// channels are TURN allocations that side a's rtpload makes itself (one
// per flow, with a ChannelBind to side b's endpoint: see cmd/rtpload
// turn.go); side a then sends ChannelData to the server and side b plain
// RTP to each allocation's relayed address. This is how a browser's media
// goes through a TURN relay, so the comparison is of the relays' cost, not
// of identical wire formats: side a's packets are 4 bytes longer.
var coturnC = &contender{key: "coturn", name: "coturn (TURN)",
	available: func() string {
		if _, err := exec.LookPath("turnserver"); err != nil {
			return "turnserver is not installed (tests/bench/deps.sh installs coturn)"
		}
		return ""
	},
	start: startCoturn,
}

const turnPort = 3478

func startCoturn(ctx context.Context, _ testing.TB, e *env, n int) (*relay, error) {
	p, err := startProc(ctx, relayCore, e.topo.nsR, nil, "turnserver", "-n",
		"--listening-ip="+relayAddr, "--listening-port="+strconv.Itoa(turnPort), "--relay-ip="+relayAddr,
		"--min-port="+strconv.Itoa(relayPortMin), "--max-port="+strconv.Itoa(relayPortMax),
		"--relay-threads=1", "--no-auth", "--no-tls", "--no-dtls", "--no-tcp", "--no-tcp-relay", "--no-cli",
		"--no-rfc5780", "--no-software-attribute", "--total-quota=0", "--user-quota=0", "--max-bps=0",
		"--log-file=stdout", "--simple-log", "--pidfile="+filepath.Join(e.dir, "turnserver.pid"))
	if err != nil {
		return nil, err
	}
	server := netip.AddrPortFrom(relayAP, turnPort)
	if err := waitBinding(e, p, server); err != nil {
		return nil, err
	}
	r := &relay{proc: p, turn: true}
	for range n {
		r.targetsA = append(r.targetsA, server)
		// targetsB are the relayed addresses, known once side a allocated.
	}
	return r, nil
}
