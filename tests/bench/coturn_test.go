package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/tests/harness"
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
	// Wait until the server answers a STUN Binding request.
	conn, err := harness.ListenUDPIn(e.topo.nsR, netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		_, _ = p.stop(10 * time.Second)
		return nil, err
	}
	defer conn.Close()
	server := netip.AddrPortFrom(relayAP, turnPort)
	req := make([]byte, 20)
	binary.BigEndian.PutUint16(req[0:], 0x0001) // Binding request
	binary.BigEndian.PutUint32(req[4:], 0x2112A442)
	copy(req[8:], "jnbench-ping")
	up := time.Now().Add(20 * time.Second)
	buf := make([]byte, 1500)
	for {
		_, _ = conn.WriteToUDP(req, net.UDPAddrFromAddrPort(server))
		_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if m, _, err := conn.ReadFromUDP(buf); err == nil && m >= 20 && binary.BigEndian.Uint16(buf) == 0x0101 {
			break
		}
		if time.Now().After(up) {
			_, _ = p.stop(10 * time.Second)
			return nil, fmt.Errorf("turnserver never answered a Binding request; stderr: %s", p.stderr)
		}
	}
	r := &relay{proc: p, turn: true}
	for range n {
		r.targetsA = append(r.targetsA, server)
		// targetsB are the relayed addresses, known once side a allocated.
	}
	return r, nil
}
