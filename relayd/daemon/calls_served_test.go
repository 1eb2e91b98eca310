package daemon

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	pionturn "github.com/pion/turn/v5"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/internal/testport"
	"github.com/jnrelay/jnrelay/relayd/channel"
	"github.com/jnrelay/jnrelay/relayd/metrics"
	"github.com/jnrelay/jnrelay/relayd/turn"
)

// relayedBack sends from remote to the channel's remote port until the
// requester's side receives it: the channel's second direction (checkRelays
// proves the first).
func relayedBack(t *testing.T, info channel.Info, local, remote *net.UDPConn) {
	t.Helper()
	rport := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: info.RemotePort}
	relayedEachWay(t, func(p []byte) error { _, err := remote.WriteToUDP(p, rport); return err }, local)
}

// relayedEachWay sends with send (at most 50 times) until to receives
// what was sent.
func relayedEachWay(t *testing.T, send func([]byte) error, to net.PacketConn) {
	t.Helper()
	buf := make([]byte, 1500)
	for i := range 50 {
		want := fmt.Appendf(nil, "media %d", i)
		if err := send(want); err != nil {
			t.Fatal(err)
		}
		if err := to.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		for {
			n, _, err := to.ReadFrom(buf)
			if err != nil {
				break // nothing (more) this round: send again
			}
			if bytes.Equal(buf[:n], want) {
				return
			}
		}
	}
	t.Fatalf("nothing relayed to %s", to.LocalAddr())
}

// turnCall allocates on the daemon's TURN server and relays a datagram
// each way between the allocation and a peer on loopback.
func turnCall(t *testing.T, cfg config.Config, id string) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	server := net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.TURN.Builtin.Port))
	user := turn.Username(time.Now().Add(time.Hour), id)
	c, err := pionturn.NewClient(&pionturn.ClientConfig{TURNServerAddr: server, STUNServerAddr: server, Username: user,
		Password: turn.Password([]byte(cfg.TURN.Secret), user), Realm: cfg.TURN.Builtin.Realm, Conn: conn, RTO: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	p := udpPeer(t)
	relayedEachWay(t, func(b []byte) error { _, err := relay.WriteTo(b, p.LocalAddr()); return err }, p)
	relayedEachWay(t, func(b []byte) error { _, err := p.WriteTo(b, relay.LocalAddr()); return err }, relay)
}

// TestCallsServedOnlyGrow: relayd_calls_served_total counts a channel and
// a TURN allocation once each relayed a datagram each way, and neither
// kind goes back when the port range changes, the channel ends, or the
// TURN server is turned off and on again live (the new server's own
// counters start at zero; the metric must not).
func TestCallsServedOnlyGrow(t *testing.T) {
	cfg := testConfig(t)
	cfg.TURN.Builtin.Enabled = true
	cfg.TURN.Builtin.Port = testport.UDPAndTCP(t)
	cfg.TURN.Secret = "a configured secret"
	d := startDaemon(t, cfg)
	reg := metrics.NewRegistry(d.MetricsSources(), "test")
	expect := func(when string, channels, turns uint64) {
		t.Helper()
		// Counted once a datagram's send returned: the receipt can come first.
		want := metrics.CallsServed{Channels: channels, TURN: turns}
		for deadline := time.Now().Add(5 * time.Second); d.MetricsSources().CallsServed() != want && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		text := string(reg.AppendText(nil))
		for _, line := range []string{
			"# TYPE relayd_calls_served_total counter",
			fmt.Sprintf(`relayd_calls_served_total{kind="channel"} %d`, channels),
			fmt.Sprintf(`relayd_calls_served_total{kind="turn"} %d`, turns),
		} {
			if !strings.Contains(text, "\n"+line+"\n") {
				t.Errorf("%s: metrics lack %q (served %+v)", when, line, d.MetricsSources().CallsServed())
			}
		}
	}
	expect("at start", 0, 0)

	info := allocate(t, d)
	local, remote := udpPeer(t), udpPeer(t)
	checkRelays(t, info, local, remote)
	expect("a channel relayed one way", 0, 0)
	relayedBack(t, info, local, remote)
	expect("a channel relayed each way", 1, 0)
	turnCall(t, cfg, "first")
	expect("a TURN allocation relayed each way", 1, 1)

	next := cfg
	next.Ports = config.PortRange{Min: cfg.Ports.Min + 100, Max: cfg.Ports.Max + 100}
	if err := d.Apply(context.Background(), next); err != nil {
		t.Fatalf("apply a new port range: %v", err)
	}
	expect("after a port range change", 1, 1)
	if !d.KillChannel(info.ID) {
		t.Fatalf("kill channel %s", info.ID)
	}
	expect("after the channel ended", 1, 1)

	off := next
	off.TURN.Builtin.Enabled = false
	if err := d.Apply(context.Background(), off); err != nil {
		t.Fatalf("turn TURN off: %v", err)
	}
	expect("with the TURN server off", 1, 1)
	if err := d.Apply(context.Background(), next); err != nil {
		t.Fatalf("turn TURN on: %v", err)
	}
	if st := d.turnSrv.Load(); st == nil || st.Stats().AllocationsServed != 0 {
		t.Fatal("the restarted TURN server does not start its own counters at zero: this test proves nothing")
	}
	expect("with the TURN server on again", 1, 1)
	turnCall(t, next, "second")
	expect("a TURN allocation on the restarted server", 1, 2)
}
