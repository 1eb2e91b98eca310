package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/kernel"
	"github.com/jnrelay/jnrelay/provision"
	"github.com/jnrelay/jnrelay/relayd/daemon"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// The media-plane attacks of the donor-safety issue run against every data
// plane the host has: a socket per relay port, steered ports (one socket
// for the range, BPF sk_lookup), and the in-kernel fast path.
type dataPlane struct {
	name     string
	sockets  string // channel.sockets
	fastPath string // channel.fast_path
}

var dataPlanes = []dataPlane{
	{"per_port", "per_port", "off"},
	{"steered", "steered", "off"},
	{"fast_path", "per_port", "auto"},
}

// forEachPlane runs fn as a subtest per data plane, skipping a plane the
// host cannot run (steered ports need BPF sk_lookup; the fast path is
// checked once relayd runs: see startRelay).
func forEachPlane(t *testing.T, fn func(t *testing.T, dp dataPlane)) {
	for _, dp := range dataPlanes {
		t.Run(dp.name, func(t *testing.T) {
			harness.RequireRoot(t)
			if relaydBin == "" {
				t.Fatal("RELAYD_BIN is not set (make test sets it)")
			}
			if dp.sockets == "steered" {
				if err := kernel.SteeringAvailable(); err != nil {
					t.Skipf("steered ports unavailable on this host (BPF sk_lookup): %v", err)
				}
			}
			fn(t, dp)
		})
	}
}

// attackLAN is the LAN of an attack test: hosts[0] is the relay (the
// bridge), the others are callers, callees, attackers, victims or a second
// relay, each a namespace of its own. Spoofed sources are let in
// (rp_filter off) and, for the fast path, the relay namespaces forward.
func attackLAN(t *testing.T, prefix string, dp dataPlane, relays []string, hosts ...string) *harness.LAN {
	t.Helper()
	lan := harness.NewLAN(t, prefix, hosts...)
	for _, h := range relays {
		dev := "eth0"
		if h == lan.Hub() {
			dev = "br0"
		}
		sysctl(t, lan, h, "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf."+dev+".rp_filter=0")
		if dp.fastPath != "off" {
			sysctl(t, lan, h, "net.ipv4.ip_forward=1")
		}
	}
	return lan
}

func sysctl(t *testing.T, lan *harness.LAN, host string, settings ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"netns", "exec", lan.NS(host), "sysctl", "-qw"}, settings...)...).CombinedOutput(); err != nil {
		t.Fatalf("sysctl %v in %s: %v: %s", settings, host, err, out)
	}
}

// addAddr gives host one more address on its LAN link (203.0.113.x/24).
func addAddr(t *testing.T, lan *harness.LAN, host string, a netip.Addr) {
	t.Helper()
	if out, err := exec.Command("ip", "-n", lan.NS(host), "addr", "add", a.String()+"/24", "dev", "eth0").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add %s on %s: %v: %s", a, host, err, out)
	}
}

// relayNode is a relayd on a host of the LAN, registered as a component
// of a server the test plays itself (floodServer, listening on the relay
// host's loopback): channels are asked for by writing IQs.
type relayNode struct {
	t    *testing.T
	host string
	addr netip.Addr
	rd   *harness.Relayd
	srv  *floodServer
	conn net.Conn

	mu    sync.Mutex // serializes requests
	n     int
	known map[string]bool // channel ids seen
}

// startRelay runs relayd on host with the data plane dp and ports
// [min, max]; edit (may be nil) changes the configuration further. With
// the fast path asked for, the subtest is skipped when relayd reports it
// unavailable.
func startRelay(ctx context.Context, t *testing.T, lan *harness.LAN, host string, dp dataPlane, min, max int, edit func(*config.Config)) *relayNode {
	t.Helper()
	var ln net.Listener
	if err := harness.RunInNetns(lan.NS(host), func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	srv := &floodServer{ln: ln, secret: host + "-secret", answers: map[string]answer{}, changed: make(chan struct{})}
	cfg := config.Default()
	cfg.PublicAddress = lan.Addr(host).String()
	cfg.Ports = config.PortRange{Min: min, Max: max}
	cfg.STUN.Enabled = false
	cfg.Reconnect = config.Reconnect{MinSeconds: 0.2, MaxSeconds: 1}
	cfg.Channel.Sockets, cfg.Channel.FastPath = config.Sockets(dp.sockets), config.FastPath(dp.fastPath)
	cfg.Limits.PerJIDChannels, cfg.Limits.PerJIDRequestsPerMinute = 0, 0
	cfg.Limits.MaxChannelsPerDomain = -1 // every caller is of one domain: the domain share is not what these tests are about
	cfg.XMPP = []config.Service{{Name: host, Type: "component", Server: ln.Addr().String(), Domain: "relay.localhost", Secret: srv.secret}}
	if edit != nil {
		edit(&cfg)
	}
	rd, err := harness.StartRelaydArgs(relaydBin, lan.NS(host), t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rd.Stop()
		if t.Failed() {
			t.Logf("relayd on %s, last log lines:\n%s", host, tail(rd.Logs(), 30))
		}
	})
	if _, err := rd.WaitLog(ctx, "provisioning API listening", 1, nil); err != nil {
		t.Fatalf("relayd on %s: %v\n%s", host, err, tail(rd.Logs(), 20))
	}
	conn, err := srv.accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := rd.WaitLog(ctx, "xmpp component online", 1, nil); err != nil {
		t.Fatal(err)
	}
	if dp.fastPath != "off" {
		if rd.Count("in-kernel fast path on: latched legs are forwarded by the kernel", nil) == 0 {
			var why []string
			for _, l := range strings.Split(rd.Logs(), "\n") {
				if strings.Contains(l, "fast path") {
					why = append(why, l)
				}
			}
			t.Skipf("in-kernel fast path unavailable on this host: %s", strings.Join(why, "; "))
		}
	}
	return &relayNode{t: t, host: host, addr: lan.Addr(host), rd: rd, srv: srv, conn: conn, known: map[string]bool{}}
}

// channel asks for a channel on behalf of the JID from and returns the
// relay addresses of its caller (local, port P) and callee (remote, P+2)
// sides.
func (n *relayNode) channel(ctx context.Context, from string) (local, remote netip.AddrPort) {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.n++
	id := "req" + strconv.Itoa(n.n)
	if _, err := n.conn.Write([]byte(channelIQ(id, from))); err != nil {
		n.t.Fatalf("channel request: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := n.srv.waitAnswers(wctx, []string{id}); err != nil {
		n.t.Fatal(err)
	}
	n.srv.mu.Lock()
	a := n.srv.answers[id]
	n.srv.mu.Unlock()
	if a.typ != "result" {
		n.t.Fatalf("channel request from %s: %s/%s", from, a.typ, a.cond)
	}
	for _, c := range n.channels(ctx) {
		if !n.known[c.ID] {
			n.known[c.ID] = true
			return netip.AddrPortFrom(n.addr, uint16(c.LocalPort)), netip.AddrPortFrom(n.addr, uint16(c.RemotePort))
		}
	}
	n.t.Fatal("granted channel missing from the channel list")
	return
}

func (n *relayNode) channels(ctx context.Context) []daemon.ChannelStatus {
	n.t.Helper()
	api := provision.NewClient(n.rd.APISocket)
	defer api.Close()
	raw, err := api.Channels(ctx)
	if err != nil {
		n.t.Fatalf("channels: %v", err)
	}
	var cs []daemon.ChannelStatus
	if err := json.Unmarshal(raw, &cs); err != nil {
		n.t.Fatalf("channels %s: %v", raw, err)
	}
	return cs
}

func (n *relayNode) status(ctx context.Context) daemon.Status { return status(ctx, n.t, n.rd) }

// forwarded is what the relay forwarded, both directions.
func forwarded(st daemon.Status) uint64 {
	return st.Traffic.PacketsLocalToRemote + st.Traffic.PacketsRemoteToLocal
}

// awaitStatus polls the relay's status (every 100 ms, the relay credits
// kernel counters every 250 ms) until cond holds or within passes; it
// returns the last status and whether cond held.
func (n *relayNode) awaitStatus(ctx context.Context, within time.Duration, cond func(daemon.Status) bool) (daemon.Status, bool) {
	n.t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := n.status(ctx)
		if cond(st) {
			return st, true
		}
		if time.Now().After(deadline) {
			return st, false
		}
		select {
		case <-ctx.Done():
			return st, false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// peer is one UDP socket of a host of the test — a party of a call, an
// attacker, a victim — that sends tagged harness RTP packets and records
// every datagram it receives: by sender tag (with sequence numbers) and
// by the source port it came from (the relay port).
type peer struct {
	tag  harness.Tag
	ssrc uint32
	conn *net.UDPConn

	mu      sync.Mutex
	seq     uint32
	seqs    map[string]map[uint32]bool // by tag
	byPort  map[uint16]map[string]int  // by source port, by tag
	total   int
	changed chan struct{}
}

func newPeer(ctx context.Context, t *testing.T, lan *harness.LAN, host string, at netip.AddrPort, tag string) *peer {
	t.Helper()
	if !at.Addr().IsValid() {
		at = netip.AddrPortFrom(lan.Addr(host), 0)
	}
	conn, err := lan.ListenUDP(host, at)
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{tag: harness.NewTag(tag), ssrc: rand.Uint32(), conn: conn,
		seqs: map[string]map[uint32]bool{}, byPort: map[uint16]map[string]int{}, changed: make(chan struct{})}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	t.Cleanup(func() { stop(); conn.Close() })
	go p.receive()
	return p
}

func (p *peer) addr() netip.AddrPort { return p.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (p *peer) receive() {
	buf := make([]byte, 2048)
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		tag := "?"
		pkt, perr := harness.ParsePacket(buf[:n])
		if perr == nil {
			tag = pkt.Tag.String()
		}
		p.mu.Lock()
		p.total++
		if p.seqs[tag] == nil {
			p.seqs[tag] = map[uint32]bool{}
		}
		p.seqs[tag][pkt.Seq] = true
		if p.byPort[from.Port()] == nil {
			p.byPort[from.Port()] = map[string]int{}
		}
		p.byPort[from.Port()][tag]++
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
}

// send sends one RTP packet to dst.
func (p *peer) send(dst netip.AddrPort) error {
	p.mu.Lock()
	seq := p.seq
	p.seq++
	p.mu.Unlock()
	pkt := harness.Packet{PayloadType: harness.DefaultPayloadType, Seq: seq, Timestamp: seq * 160, SSRC: p.ssrc, SentAt: time.Now().UnixNano(), Tag: p.tag}
	_, err := p.conn.WriteToUDPAddrPort(pkt.AppendRTP(nil, harness.DefaultRTPSize), dst)
	return err
}

// stream sends count packets to dst, one per interval (the first at
// once), and returns the sequence number of the first; it stops early
// when ctx is done.
func (p *peer) stream(ctx context.Context, dst netip.AddrPort, count int, interval time.Duration) (first uint32, err error) {
	p.mu.Lock()
	first = p.seq
	p.mu.Unlock()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := range count {
		if i > 0 {
			select {
			case <-ctx.Done():
				return first, ctx.Err()
			case <-tick.C:
			}
		}
		if err := p.send(dst); err != nil {
			return first, err
		}
	}
	return first, nil
}

// streamUntil sends to dst at 50 packets/s until stop is closed (or max
// packets), in the background; done receives the number sent.
func (p *peer) streamUntil(ctx context.Context, dst netip.AddrPort, max int, stop <-chan struct{}) <-chan int {
	done := make(chan int, 1)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		sent := 0
		for sent < max {
			if p.send(dst) == nil {
				sent++
			}
			select {
			case <-ctx.Done():
				done <- sent
				return
			case <-stop:
				done <- sent
				return
			case <-tick.C:
			}
		}
		done <- sent
	}()
	return done
}

// got is how many distinct packets tagged tag arrived with a sequence
// number in [from, to).
func (p *peer) got(tag string, from, to uint32) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for s := range p.seqs[tag] {
		if s >= from && s < to {
			n++
		}
	}
	return n
}

// count is how many datagrams tagged tag arrived ("" = any).
func (p *peer) count(tag string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if tag == "" {
		return p.total
	}
	n := 0
	for _, byTag := range p.byPort {
		n += byTag[tag]
	}
	return n
}

// tags lists the tags received, with their counts.
func (p *peer) tags() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := map[string]int{}
	for _, byTag := range p.byPort {
		for tag, n := range byTag {
			m[tag] += n
		}
	}
	return m
}

// fromPort is how many datagrams arrived from source port port, by tag.
func (p *peer) fromPort(port uint16) map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.byPort[port])
}

// wait waits until n packets tagged tag with a sequence number ≥ from
// arrived.
func (p *peer) wait(ctx context.Context, tag string, from uint32, n int) error {
	for {
		p.mu.Lock()
		got := 0
		for s := range p.seqs[tag] {
			if s >= from {
				got++
			}
		}
		changed := p.changed
		p.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s at %s: %d of %d packets from %q (seq ≥ %d): %w", p.tag, p.addr(), got, n, tag, from, ctx.Err())
		case <-changed:
		}
	}
}

// sprayer sweeps the whole port range from one address: one datagram to
// every port, every period, until stop is closed or max sweeps were sent.
// What the relay forwards back lands in its peer.
type sprayer struct {
	*peer
	sweeps, sent int           // read after done is closed
	warm         chan struct{} // closed after the first 4 sweeps
	done         chan struct{}
}

func spray(ctx context.Context, p *peer, relay netip.Addr, min, max int, period time.Duration, maxSweeps int, stop <-chan struct{}) *sprayer {
	s := &sprayer{peer: p, warm: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for s.sweeps < maxSweeps {
			for port := min; port <= max; port++ {
				if p.send(netip.AddrPortFrom(relay, uint16(port))) == nil {
					s.sent++
				}
			}
			s.sweeps++
			if s.sweeps == 4 {
				close(s.warm)
			}
			select {
			case <-ctx.Done():
				return
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// perChannel sums what a peer received from the relay ports of each
// channel, by the channel's base port P = min + 4k, counting only the
// tags victim accepts.
func perChannel(p *peer, min, max int, victim func(tag string) bool) map[int]int {
	out := map[int]int{}
	for port := min; port <= max; port++ {
		for tag, n := range p.fromPort(uint16(port)) {
			if victim(tag) {
				out[min+(port-min)/4*4] += n
			}
		}
	}
	return out
}

// droppedDelta is the growth of a drop reason between two statuses.
func droppedDelta(before, after daemon.Status, reason string) uint64 {
	return after.Traffic.Dropped[reason] - before.Traffic.Dropped[reason]
}

// reasons lists the drop reasons a status has, for failure messages.
func reasons(st daemon.Status) string {
	var out []string
	for r, n := range st.Traffic.Dropped {
		out = append(out, fmt.Sprintf("%s=%d", r, n))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}
