package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/internal/testport"
	"github.com/jnrelay/jnrelay/kernel"
	"github.com/jnrelay/jnrelay/provision"
	"github.com/jnrelay/jnrelay/relayd/daemon"
	"github.com/jnrelay/jnrelay/relayd/turn"
)

// echoPeer is the TURN peer: a UDP socket the test owns on loopback that
// echoes every datagram and remembers where they came from.
type echoPeer struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  []netip.AddrPort // sources, one per datagram
	size []int
}

func newEchoPeer(t *testing.T) *echoPeer {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return newEchoPeerOn(t, conn)
}

// newEchoPeerOn is an echo peer on conn (a socket of another namespace);
// it closes conn at the test's end.
func newEchoPeerOn(t *testing.T, conn *net.UDPConn) *echoPeer {
	p := &echoPeer{conn: conn}
	done := make(chan struct{})
	t.Cleanup(func() { conn.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			p.got, p.size = append(p.got, from), append(p.size, n)
			p.mu.Unlock()
			conn.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return p
}

func (p *echoPeer) port() int { return p.conn.LocalAddr().(*net.UDPAddr).Port }

// received returns the sources and sizes of the datagrams from index from on.
func (p *echoPeer) received(from int) ([]netip.AddrPort, []int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]netip.AddrPort(nil), p.got[from:]...), append([]int(nil), p.size[from:]...)
}

// TestBuiltinTURNWithCoturnClient runs relayd's built-in TURN server on
// loopback and coturn's turnutils_uclient against it, with credentials
// computed from the secret relayd generated in its state directory (as a
// provider's own tooling would): data reaches the test's echo peer from a
// relay port and comes back, over a channel binding, over Send
// indications and with the client on TCP and on TLS; a peer at 0.0.0.0 (CVE-2020-26262) and the relay's own
// relayed addresses (client to client) are refused, nothing sent.
func TestBuiltinTURNWithCoturnClient(t *testing.T) {
	if _, err := exec.LookPath("turnutils_uclient"); err != nil {
		t.Fatalf("turnutils_uclient not installed (run tests/deps.sh): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cfg := builtinTURNConfig(t)
	cfg.Limits.MaxChannelsPerDomain = -1 // every id of these credentials is at turn.invalid
	dir := t.TempDir()
	// TURN over TLS, with a certificate for 127.0.0.1 in the
	// configuration's directory, where relayd reads files from.
	certPath := writeSelfSigned(t, dir, "turn.crt", "turn.key")
	cfg.TURN.Builtin.TLSPort = testport.TCP(t)
	cfg.TURN.Builtin.CertFile, cfg.TURN.Builtin.KeyFile = "turn.crt", "turn.key"
	rd := startRelaydIn(t, "", dir, cfg)
	if _, err := rd.WaitLog(ctx, "TURN server started", 1, nil); err != nil {
		t.Fatal(err)
	}
	// channel.sockets at its default, auto: relayd as root steers the
	// relay ports where the kernel can, and the allocations below are
	// relay ports with sockets of their own beside the steering.
	if os.Geteuid() == 0 && kernel.SteeringAvailable() == nil {
		if st := socketsOf(ctx, t, rd); st.Mode != "auto" || st.Active != "steered" {
			t.Fatalf("status sockets %+v, want the default auto running steered", st)
		}
	}
	secret := turnSecret(t, dir)
	peer := newEchoPeer(t)

	uclientAt := func(t *testing.T, port int, id string, args ...string) (string, error) {
		t.Helper()
		return turnutilsUclient(ctx, t, port, secret, id, args...)
	}
	uclient := func(t *testing.T, id string, args ...string) (string, error) {
		t.Helper()
		return uclientAt(t, cfg.TURN.Builtin.Port, id, args...)
	}
	echoedAt := func(t *testing.T, port int, id string, args ...string) {
		t.Helper()
		before := len(peerSources(peer))
		out, err := uclientAt(t, port, id, append([]string{"-e", "127.0.0.1", "-r", strconv.Itoa(peer.port())}, args...)...)
		if err != nil {
			t.Fatalf("turnutils_uclient: %v\n%s", err, out)
		}
		if !strings.Contains(out, "tot_recv_msgs=5") || !strings.Contains(out, "Total lost packets 0 ") {
			t.Fatalf("the client did not get its 5 datagrams back:\n%s", out)
		}
		from, sizes := peer.received(before)
		if len(from) != 5 {
			t.Fatalf("peer got %d datagrams, want 5", len(from))
		}
		for i, src := range from {
			if src.Addr() != netip.MustParseAddr("127.0.0.1") || int(src.Port()) < cfg.Ports.Min || int(src.Port()) > cfg.Ports.Max || sizes[i] != 100 {
				t.Fatalf("peer got %d bytes from %s, want 100 from a relay port %d-%d", sizes[i], src, cfg.Ports.Min, cfg.Ports.Max)
			}
		}
	}
	echoed := func(t *testing.T, id string, args ...string) {
		t.Helper()
		echoedAt(t, cfg.TURN.Builtin.Port, id, args...)
	}
	t.Run("channel-bind", func(t *testing.T) { echoed(t, "bind") })
	t.Run("send-indication", func(t *testing.T) { echoed(t, "send", "-s") })
	t.Run("tcp", func(t *testing.T) { echoed(t, "tcp", "-t") }) // TURN over TCP, relayed over UDP
	// TURN over TLS, relayed over UDP. turnutils_uclient does not fail on
	// a certificate it cannot verify: the test checks the one relayd
	// presents itself.
	t.Run("tls", func(t *testing.T) {
		verifyPresented(t, cfg.TURN.Builtin.TLSPort, certPath)
		echoedAt(t, cfg.TURN.Builtin.TLSPort, "tls", "-t", "-S")
	})

	// While a client's allocation is live it is listed beside the
	// channels (GET /v1/channels); turnutils_uclient leaves it to expire
	// when done, and the API's kill (DELETE /v1/channels/ID) ends it and
	// takes it off the list.
	t.Run("listed", func(t *testing.T) {
		api := provision.NewClient(rd.APISocket)
		defer api.Close()
		done := make(chan string, 1)
		go func() {
			out, _ := uclient(t, "listed", "-e", "127.0.0.1", "-r", strconv.Itoa(peer.port()), "-n", "100", "-z", "50")
			done <- out
		}()
		var seen *daemon.TURNAllocationStatus
		var out string
		for seen == nil {
			select {
			case out = <-done:
				t.Fatalf("the client ended before its allocation was listed:\n%s", out)
			case <-time.After(20 * time.Millisecond):
			}
			seen = listedTURN(ctx, t, api, "listed@turn.invalid")
		}
		if seen.Kind != "turn" || seen.Transport != "udp" || !strings.HasPrefix(seen.Client, "127.0.0.1:") ||
			!strings.HasPrefix(seen.Relayed, "127.0.0.1:") || seen.Created.IsZero() {
			t.Fatalf("listed %+v", seen)
		}
		out = <-done
		if !strings.Contains(out, "tot_recv_msgs=100") {
			t.Fatalf("the client did not get its 100 datagrams back:\n%s", out)
		}
		if listedTURN(ctx, t, api, "listed@turn.invalid") == nil {
			t.Fatal("the allocation left the list before it expired or was killed")
		}
		if err := api.KillChannel(ctx, seen.ID); err != nil {
			t.Fatalf("kill %s: %v", seen.ID, err)
		}
		if a := listedTURN(ctx, t, api, "listed@turn.invalid"); a != nil {
			t.Fatalf("killed allocation still listed: %+v", a)
		}
		var ae *provision.Error
		if err := api.KillChannel(ctx, seen.ID); !errors.As(err, &ae) || ae.Status != 404 {
			t.Fatalf("second kill of %s: %v, want 404", seen.ID, err)
		}
	})

	refused := func(t *testing.T, id, want string, args ...string) {
		t.Helper()
		st, err := rd.Status(ctx)
		if err != nil || st.TURN == nil {
			t.Fatalf("status: %v %+v", err, st.TURN)
		}
		before, peerBefore := *st.TURN, len(peerSources(peer))
		out, _ := uclient(t, id, args...) // it may exit with an error: it was refused
		if !strings.Contains(out, want) {
			t.Fatalf("client output lacks %q:\n%s", want, out)
		}
		st, err = rd.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.TURN.Refused[turn.RefusedPeer] <= before.Refused[turn.RefusedPeer] || st.TURN.BytesToPeers != before.BytesToPeers {
			t.Fatalf("refused peers %d -> %d, bytes to peers %d -> %d", before.Refused[turn.RefusedPeer],
				st.TURN.Refused[turn.RefusedPeer], before.BytesToPeers, st.TURN.BytesToPeers)
		}
		// The client has sent everything and given up: whatever the relay
		// sent toward loopback would have reached the echo peer by now.
		if got := len(peerSources(peer)); got != peerBefore {
			t.Fatalf("the echo peer got %d datagrams through a refused peer", got-peerBefore)
		}
	}
	// 0.0.0.0 reaches the host itself (CVE-2020-26262): the echo peer is
	// on its port. pion refuses the channel binding.
	t.Run("unspecified-peer", func(t *testing.T) {
		refused(t, "zero", "channel bind: error", "-e", "0.0.0.0", "-r", strconv.Itoa(peer.port()))
	})
	// Two clients sending to each other's relayed address: a relay port of
	// the relay itself.
	t.Run("relay-own-port", func(t *testing.T) { refused(t, "pair", "Total lost packets 10 (100", "-y") })
}

// listedTURN is the TURN allocation of requester in relayd's live list
// (GET /v1/channels), or nil.
func listedTURN(ctx context.Context, t *testing.T, api *provision.Client, requester string) *daemon.TURNAllocationStatus {
	t.Helper()
	raw, err := api.Channels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var list []daemon.TURNAllocationStatus // channels decode with an empty requester
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatalf("channels %s: %v", raw, err)
	}
	for _, a := range list {
		if a.Kind == daemon.KindTURN && a.Requester == requester {
			return &a
		}
	}
	return nil
}

func peerSources(p *echoPeer) []netip.AddrPort {
	from, _ := p.received(0)
	return from
}

// builtinTURNConfig is a relay on loopback with its built-in TURN server
// on a free port, STUN and the fast path off, and a random port range.
func builtinTURNConfig(t *testing.T) config.Config {
	t.Helper()
	base := 45000 + 4*rand.IntN(200)
	cfg := config.Default()
	cfg.PublicAddress, cfg.ListenAddress = "127.0.0.1", "127.0.0.1"
	cfg.Ports = config.PortRange{Min: base, Max: base + 99}
	cfg.Channel.FastPath = config.FastPathOff
	cfg.STUN.Enabled = false
	cfg.TURN.Builtin.Enabled = true
	cfg.TURN.Builtin.Port = testport.UDPAndTCP(t)
	return cfg
}

// turnSecret is the TURN secret relayd generated in its state directory
// dir, as a provider's own tooling would read it.
func turnSecret(t *testing.T, dir string) []byte {
	t.Helper()
	secret, err := os.ReadFile(filepath.Join(dir, turn.SecretFile))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(secret)
}

// turnutilsUclient runs coturn's turnutils_uclient against the TURN
// server at 127.0.0.1:port with fresh credentials for id signed with
// secret, and returns its output; it exits 255 when the server refuses
// it. It fails the test if the client has not ended within 30 s.
func turnutilsUclient(ctx context.Context, t *testing.T, port int, secret []byte, id string, args ...string) (string, error) {
	t.Helper()
	user := turn.Username(time.Now().Add(time.Hour), id)
	all := append([]string{"-p", strconv.Itoa(port), "-u", user, "-w", turn.Password(secret, user),
		"-n", "5", "-l", "100", "-z", "5", "-c"}, args...)
	all = append(all, "127.0.0.1")
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	out, err := exec.CommandContext(cctx, "turnutils_uclient", all...).CombinedOutput()
	if cctx.Err() != nil {
		t.Fatalf("turnutils_uclient %v: %v\n%s", all, cctx.Err(), out)
	}
	return string(out), err
}

// TestBuiltinTURNQuotaRefusal: with limits.max_channels at 2, a coturn
// client, which allocates from two sockets, is refused with 486
// Allocation Quota Reached (RFC 8656) while another client's allocation
// lives (turnutils_uclient leaves one to expire when done); once the
// API's kill has ended every allocation, the next client gets both.
func TestBuiltinTURNQuotaRefusal(t *testing.T) {
	if _, err := exec.LookPath("turnutils_uclient"); err != nil {
		t.Fatalf("turnutils_uclient not installed (run tests/deps.sh): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := builtinTURNConfig(t)
	cfg.Limits.MaxChannels = 2
	cfg.Limits.MaxChannelsPerDomain = -1 // every id of these credentials is at turn.invalid
	dir := t.TempDir()
	rd := startRelaydIn(t, "", dir, cfg)
	if _, err := rd.WaitLog(ctx, "TURN server started", 1, nil); err != nil {
		t.Fatal(err)
	}
	secret := turnSecret(t, dir)
	peer := newEchoPeer(t)
	uclient := func(id string) (string, error) {
		return turnutilsUclient(ctx, t, cfg.TURN.Builtin.Port, secret, id, "-e", "127.0.0.1", "-r", strconv.Itoa(peer.port()))
	}
	api := provision.NewClient(rd.APISocket)
	defer api.Close()

	if out, err := uclient("first"); err != nil || !strings.Contains(out, "tot_recv_msgs=5") {
		t.Fatalf("first client: %v\n%s", err, out)
	}
	if listedTURN(ctx, t, api, "first@turn.invalid") == nil {
		t.Fatal("the first client left no allocation behind: nothing to refuse the second one")
	}
	out, err := uclient("second")
	if err == nil || !strings.Contains(out, "error 486") {
		t.Fatalf("second client: %v, want it refused with 486:\n%s", err, out)
	}
	for _, id := range []string{"first", "second"} {
		for range 3 {
			a := listedTURN(ctx, t, api, id+"@turn.invalid")
			if a == nil {
				break
			}
			if err := api.KillChannel(ctx, a.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if out, err := uclient("third"); err != nil || !strings.Contains(out, "tot_recv_msgs=5") {
		t.Fatalf("third client after the kills: %v\n%s", err, out)
	}
}
