package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/internal/testport"
	"github.com/jnrelay/jnrelay/relayd/channel"
	"github.com/jnrelay/jnrelay/relayd/directory"
)

// The daemon runs here on loopback only: relay ports on 127.0.0.1 in a
// range above the kernel's ephemeral ports (61000-65535), public address
// 127.0.0.1 (a relay on loopback serves its own host), no fast path, and
// no XMPP service unless a test adds one (a closed port: it never comes
// online).

// testPorts is a 40-port range (10 channels) in 61000-64999, offset so
// that parallel runs rarely meet.
func testPorts(t *testing.T) config.PortRange {
	t.Helper()
	base := 61000 + 4*rand.IntN(900)
	return config.PortRange{Min: base, Max: base + 39}
}

func testConfig(t *testing.T) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.ListenAddress = "127.0.0.1"
	cfg.PublicAddress = "127.0.0.1"
	cfg.Ports = testPorts(t)
	cfg.Channel.FastPath = config.FastPathOff
	cfg.STUN.Port = testport.UDPAndTCP(t)
	return cfg
}

// startDaemon starts a daemon on cfg and closes it at the end of the test.
func startDaemon(t *testing.T, cfg config.Config) *Daemon {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test configuration: %v", err)
	}
	d, err := New(context.Background(), cfg, Options{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// allocate opens a channel as a granted request would.
func allocate(t *testing.T, d *Daemon) channel.Info {
	t.Helper()
	info, err := d.dp.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	return info
}

func udpPeer(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// checkRelays proves the channel relays: the remote party and the
// requester each latch their leg, then what the requester sends to its
// port reaches the remote party from the remote port. Datagrams are
// resent (at most 50 times) until one arrives, as a latch needs the
// other leg latched first.
func checkRelays(t *testing.T, info channel.Info, local, remote *net.UDPConn) {
	t.Helper()
	lport := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: info.LocalPort}
	rport := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: info.RemotePort}
	buf := make([]byte, 1500)
	for i := range 50 {
		want := fmt.Appendf(nil, "rtp %d", i)
		if _, err := remote.WriteToUDP([]byte("latch"), rport); err != nil {
			t.Fatal(err)
		}
		if _, err := local.WriteToUDP(want, lport); err != nil {
			t.Fatal(err)
		}
		if err := remote.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		for {
			n, from, err := remote.ReadFromUDP(buf)
			if err != nil {
				break // nothing (more) this round: send again
			}
			if bytes.Equal(buf[:n], want) {
				if from.Port != info.RemotePort {
					t.Fatalf("relayed from port %d, want the remote port %d", from.Port, info.RemotePort)
				}
				return
			}
		}
	}
	t.Fatalf("channel %s (%d/%d) relayed nothing", info.ID, info.LocalPort, info.RemotePort)
}

func channelIDs(d *Daemon) []string {
	var ids []string
	for _, c := range d.Channels() {
		ids = append(ids, c.ID)
	}
	return ids
}

func TestApplyNewPortRangeKeepsLiveChannel(t *testing.T) {
	cfg := testConfig(t)
	d := startDaemon(t, cfg)
	info := allocate(t, d)
	local, remote := udpPeer(t), udpPeer(t)
	checkRelays(t, info, local, remote)
	// The fast path is off: status says so, and every leg is userspace's.
	if fp := d.Status().FastPath; fp.Mode != string(config.FastPathOff) || fp.Active || fp.By != "" || fp.OffloadedLegs != 0 {
		t.Errorf("status fast_path %+v, want mode off, inactive", fp)
	}
	for _, c := range d.Channels() {
		if c.Path["rtp"] != "userspace" || c.Path["rtcp"] != "userspace" || len(c.Path) != 2 {
			t.Errorf("channel %s path %v, want both legs in userspace", c.ID, c.Path)
		}
	}

	next := cfg
	next.Ports = config.PortRange{Min: cfg.Ports.Min + 100, Max: cfg.Ports.Max + 100}
	if err := d.Apply(context.Background(), next); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if got := d.Config().Ports; got != next.Ports {
		t.Fatalf("ports in force %+v, want %+v", got, next.Ports)
	}
	if ids := channelIDs(d); !slices.Contains(ids, info.ID) {
		t.Fatalf("live channel %s gone after apply: %v", info.ID, ids)
	}
	checkRelays(t, info, local, remote)
	fresh := allocate(t, d)
	if fresh.LocalPort < next.Ports.Min || fresh.RemotePort+1 > next.Ports.Max {
		t.Fatalf("new channel on %d-%d, outside the new range %d-%d", fresh.LocalPort, fresh.RemotePort+1, next.Ports.Min, next.Ports.Max)
	}
}

func TestApplyRefusesChangesThatNeedARestart(t *testing.T) {
	cfg := testConfig(t)
	d := startDaemon(t, cfg)
	info := allocate(t, d)
	for _, c := range []struct {
		name   string
		change func(*config.Config)
		want   string
	}{
		{"listen address", func(c *config.Config) { c.ListenAddress = "127.0.0.2" }, "listen_address: changing it needs a restart of relayd"},
		{"steered sockets", func(c *config.Config) { c.Channel.Sockets = config.SocketsSteered }, "channel.sockets: changing it needs a restart of relayd"},
		{"per_port sockets", func(c *config.Config) { c.Channel.Sockets = config.SocketsPerPort }, "channel.sockets: changing it needs a restart of relayd"},
	} {
		next := cfg
		c.change(&next)
		next.Channel.MaxKbps = 64 // a change that alone would apply
		err := d.Apply(context.Background(), next)
		if err == nil || err.Error() != c.want {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
		if got := d.Config(); got.ListenAddress != cfg.ListenAddress || got.Channel.Sockets != cfg.Channel.Sockets || got.Channel.MaxKbps != cfg.Channel.MaxKbps {
			t.Errorf("%s: configuration changed although refused: %+v", c.name, got.Channel)
		}
	}
	if ids := channelIDs(d); !slices.Equal(ids, []string{info.ID}) {
		t.Fatalf("channels after refused applies: %v", ids)
	}
}

func TestApplyRefusesInvalidConfiguration(t *testing.T) {
	cfg := testConfig(t)
	d := startDaemon(t, cfg)
	next := cfg
	next.Ports.Max = 70000
	next.Log.Level = "loud"
	err := d.Apply(context.Background(), next)
	var inv *config.Invalid
	if !errors.As(err, &inv) {
		t.Fatalf("got %T %v, want *config.Invalid", err, err)
	}
	var fields []string
	for _, f := range inv.Fields {
		fields = append(fields, f.Field)
	}
	if !slices.Equal(fields, []string{"ports.max", "log.level"}) {
		t.Fatalf("fields %v", fields)
	}
	if got := d.Config(); got.Ports != cfg.Ports || got.Log != cfg.Log {
		t.Fatalf("invalid configuration took effect: %+v %+v", got.Ports, got.Log)
	}
	if c := d.Status().Channels.Capacity; c != 10 {
		t.Fatalf("capacity %d after a refused apply, want 10", c)
	}
}

func TestStatusReportsWhatRuns(t *testing.T) {
	cfg := testConfig(t)
	d := startDaemon(t, cfg)
	allocate(t, d)
	st := d.Status()
	if st.Version != "test" || st.PublicAddress != "127.0.0.1" || st.Reachability != "configured" {
		t.Fatalf("identity: %+v", st)
	}
	if st.Channels != (ChannelTotals{Active: 1, Capacity: 10}) {
		t.Fatalf("channels %+v, want 1 of 10", st.Channels)
	}
	if st.STUN == nil {
		t.Fatal("STUN server enabled but not reported")
	}
	if len(st.Sessions) != 0 {
		t.Fatalf("sessions %+v, none configured", st.Sessions)
	}
	if st.Directory != nil {
		t.Fatalf("directory %+v, none configured", st.Directory)
	}

	// Without STUN, none is reported and its port is free again.
	next := cfg
	next.STUN.Enabled = false
	if err := d.Apply(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	if st := d.Status(); st.STUN != nil {
		t.Fatalf("STUN off but reported: %+v", st.STUN)
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: cfg.STUN.Port})
	if err != nil {
		t.Fatalf("STUN port still held after STUN was turned off: %v", err)
	}
	c.Close()
}

// The status lists the directories configured, each waiting while no
// session is online, and follows a change of them.
func TestStatusReportsDirectories(t *testing.T) {
	cfg := testConfig(t)
	closed := testport.TCP(t) // nobody listens: the session never comes online
	cfg.XMPP = []config.Service{{Name: "relay", Type: config.ServiceComponent, Server: fmt.Sprintf("127.0.0.1:%d", closed),
		Domain: "relay.localhost", Secret: "s"}}
	node := config.DirectoryNode{Service: "pubsub.localhost", Node: "relays"}
	cfg.Directory.Publish = []config.DirectoryNode{node}
	cfg.Directory.Subscribe = []config.DirectoryNode{node, {Service: "pubsub.example.org", Node: "mirror"}}
	d := startDaemon(t, cfg)
	st := d.Status().Directory
	if st == nil || len(st.Publish) != 1 || st.Publish[0].Node != "pubsub.localhost/relays" || st.Publish[0].State != directory.StateWaiting {
		t.Fatalf("directory status %+v", st)
	}
	if len(st.Subscribe) != 2 || st.Subscribe[1].Node != "pubsub.example.org/mirror" || st.ReaderTotals == nil || st.Relays != 0 || st.Listed != 0 {
		t.Fatalf("directory status %+v", st)
	}
	next := cfg
	next.Directory.Publish = nil
	if err := d.Apply(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	if st := d.Status().Directory; st == nil || len(st.Publish) != 0 || len(st.Subscribe) != 2 {
		t.Fatalf("after publish was removed: %+v", st)
	}
	next.Directory.Subscribe = nil
	if err := d.Apply(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	if st := d.Status().Directory; st != nil {
		t.Fatalf("after every directory was removed: %+v", st)
	}
}

// A service may carry the name of one of the daemon's own parts: its
// session runs besides that part and neither replaces the other.
func TestServiceNamedAfterAPartDoesNotCollide(t *testing.T) {
	cfg := testConfig(t)
	closed := testport.TCP(t) // nobody listens: the sessions keep retrying
	names := []string{"stun", "tracker", "publicaddr"}
	for i, name := range names {
		cfg.XMPP = append(cfg.XMPP, config.Service{Name: name, Type: config.ServiceComponent,
			Server: fmt.Sprintf("127.0.0.1:%d", closed), Domain: fmt.Sprintf("relay%d.localhost", i), Secret: "s"})
	}
	d := startDaemon(t, cfg)
	checkParts := func(when string) {
		t.Helper()
		for k := range numSystemParts {
			dir := d.Config().Directory
			if k == partSTUN && !d.Config().STUN.Enabled || k == partTURN && !d.Config().TURN.Builtin.Enabled ||
				k == partDirectory && len(dir.Publish)+len(dir.Subscribe) == 0 || k == partPortMap && !wantsPortMapping(d.Config()) {
				continue
			}
			if !d.systemRunning(k) {
				t.Errorf("%s: system part %s not running", when, k)
			}
		}
		if d.Status().STUN == nil {
			t.Errorf("%s: STUN server not reported", when)
		}
		if c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: cfg.STUN.Port}); err == nil {
			c.Close()
			t.Errorf("%s: nothing holds the STUN port", when)
		}
	}
	checkParts("started")
	var got []string
	for _, s := range d.Status().Sessions {
		got = append(got, s.Name)
	}
	if !slices.Equal(got, names) {
		t.Fatalf("sessions %v, want %v", got, names)
	}

	// Removing the services stops their sessions, not the parts.
	next := cfg
	next.XMPP = nil
	if err := d.Apply(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	if s := d.Status().Sessions; len(s) != 0 {
		t.Fatalf("sessions after removal: %+v", s)
	}
	checkParts("after the services were removed")
}

func TestCloseEndsChannels(t *testing.T) {
	cfg := testConfig(t)
	d, err := New(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	info := allocate(t, d)
	checkRelays(t, info, udpPeer(t), udpPeer(t))
	d.Close()
	if n := len(d.Channels()); n != 0 {
		t.Fatalf("%d channels live after Close", n)
	}
	if a := d.DataPlaneTotals().Active; a != 0 {
		t.Fatalf("%d channels counted live after Close", a)
	}
	// Every port of the channel is free again.
	for p := info.LocalPort; p <= info.RemotePort+1; p++ {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p))))
		if err != nil {
			t.Fatalf("port %d still held after Close: %v", p, err)
		}
		c.Close()
	}
}
