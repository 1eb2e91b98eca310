package e2e

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/turn"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// TestBuiltinTURNIPv6ClientToIPv4Peer is the dual-stack case in
// namespaces: a phone with IPv6 only on its link reaches a peer with
// IPv4 only through relayd's built-in TURN server on a dual-stack relay
// (listen_address 0.0.0.0, public_address and public_address6), with
// coturn's turnutils_uclient over IPv6: its datagrams reach the peer
// from the relay's IPv4 address and the peer's echoes come back, over
// UDP, TCP and TLS, with the family omitted (IPv4 by default) and asked
// for.
func TestBuiltinTURNIPv6ClientToIPv4Peer(t *testing.T) {
	if _, err := exec.LookPath("turnutils_uclient"); err != nil {
		t.Fatalf("turnutils_uclient not installed (run tests/deps.sh): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "tv6", "relay", "phone", "peer")
	relay6, phone6 := netip.MustParsePrefix("2001:db8:6::1/64"), netip.MustParsePrefix("2001:db8:6::2/64")
	for _, step := range []error{lan.AddIPv6("relay", relay6), lan.AddIPv6("phone", phone6), lan.RemoveIPv4("phone"), lan.DisableIPv6("peer")} {
		if step != nil {
			t.Fatal(step)
		}
	}
	peerAddr := lan.Addr("peer")
	conn, err := lan.ListenUDP("peer", netip.AddrPortFrom(peerAddr, 0))
	if err != nil {
		t.Fatal(err)
	}
	peer := newEchoPeerOn(t, conn)
	// The phone has no IPv4 path to the peer of its own.
	err = harness.RunInNetns(lan.NS("phone"), func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(peerAddr, uint16(peer.port()))))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("direct"))
		return err
	})
	if !errors.Is(err, syscall.ENETUNREACH) {
		t.Fatalf("the phone sends IPv4 to the peer directly (%v): it is not IPv6-only", err)
	}

	base := 45000 + 4*rand.IntN(200)
	cfg := config.Default()
	cfg.PublicAddress, cfg.PublicAddress6 = lan.Addr("relay").String(), relay6.Addr().String()
	cfg.Ports = config.PortRange{Min: base, Max: base + 99}
	cfg.Channel.FastPath = config.FastPathOff
	cfg.STUN.Enabled = false
	cfg.TURN.Builtin.Enabled = true
	cfg.Limits.MaxChannelsPerDomain = -1 // every id of these credentials is at turn.invalid
	dir := t.TempDir()
	writeSelfSigned(t, dir, "turn.crt", "turn.key") // the client does not verify it
	cfg.TURN.Builtin.TLSPort = 5349
	cfg.TURN.Builtin.CertFile, cfg.TURN.Builtin.KeyFile = "turn.crt", "turn.key"
	rd := startRelaydIn(t, lan.NS("relay"), dir, cfg)
	if _, err := rd.WaitLog(ctx, "TURN server started", 1, nil); err != nil {
		t.Fatal(err)
	}
	secret := turnSecret(t, dir)

	uclient := func(t *testing.T, id string, args ...string) (string, error) {
		t.Helper()
		port := cfg.TURN.Builtin.Port
		if id == "tls" {
			port = cfg.TURN.Builtin.TLSPort
		}
		user := turn.Username(time.Now().Add(time.Hour), id)
		all := append([]string{"-p", strconv.Itoa(port), "-u", user, "-w", turn.Password(secret, user),
			"-n", "5", "-l", "100", "-z", "5", "-c", "-e", peerAddr.String(), "-r", strconv.Itoa(peer.port())}, args...)
		all = append(all, relay6.Addr().String())
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		defer ccancel()
		out, err := lan.Command(cctx, "phone", "turnutils_uclient", all...).CombinedOutput()
		if cctx.Err() != nil {
			t.Fatalf("turnutils_uclient %v: %v\n%s", all, cctx.Err(), out)
		}
		return string(out), err
	}
	// relayedIPv4 asserts that every relayed address the client got is
	// the relay's IPv4 address.
	relayedIPv4 := func(t *testing.T, out string) {
		t.Helper()
		if n := strings.Count(out, "Received relay addr"); n == 0 || n != strings.Count(out, "IPv4. Received relay addr: "+lan.Addr("relay").String()+":") {
			t.Fatalf("the phone did not get (only) IPv4 relayed addresses at %s:\n%s", lan.Addr("relay"), out)
		}
	}
	echoed := func(t *testing.T, id string, args ...string) {
		t.Helper()
		before := len(peerSources(peer))
		out, err := uclient(t, id, append(args, "-v")...)
		if err != nil || !strings.Contains(out, "tot_recv_msgs=5") || !strings.Contains(out, "Total lost packets 0 ") {
			t.Fatalf("the phone did not get its 5 datagrams back (%v):\n%s", err, out)
		}
		relayedIPv4(t, out)
		from, sizes := peer.received(before)
		if len(from) != 5 {
			t.Fatalf("peer got %d datagrams, want 5", len(from))
		}
		for i, src := range from {
			if src.Addr() != lan.Addr("relay") || int(src.Port()) < cfg.Ports.Min || int(src.Port()) > cfg.Ports.Max || sizes[i] != 100 {
				t.Fatalf("peer got %d bytes from %s, want 100 from the relay's IPv4 relay port %d-%d", sizes[i], src, cfg.Ports.Min, cfg.Ports.Max)
			}
		}
	}
	t.Run("udp-family-omitted", func(t *testing.T) { echoed(t, "omitted") })
	t.Run("udp-ipv4-asked", func(t *testing.T) { echoed(t, "asked", "-X") })
	t.Run("tcp", func(t *testing.T) { echoed(t, "tcp", "-t", "-X") })
	t.Run("tls", func(t *testing.T) { echoed(t, "tls", "-t", "-S") })
	// A dual allocation (ADDITIONAL-ADDRESS-FAMILY): pion ignores the
	// attribute and the phone gets one relayed address, IPv4. This
	// client then refreshes naming a family at random (to test servers):
	// one naming IPv6 is refused with 443 (Peer Address Family Mismatch,
	// as RFC 8656 says for a family the allocation lacks) and the client
	// gives up; no datagram is sent (-n 0), so the run is the same
	// either way.
	t.Run("dual-allocation", func(t *testing.T) {
		out, err := uclient(t, "dual", "-Z", "-n", "0", "-v")
		relayedIPv4(t, out)
		if err != nil && !strings.HasSuffix(strings.TrimSpace(out), "error 443 ()") {
			t.Fatalf("dual allocation failed (%v) other than by a refresh naming IPv6:\n%s", err, out)
		}
	})

	st, err := rd.Status(ctx)
	if err != nil || st.TURN == nil {
		t.Fatalf("status: %v %+v", err, st.TURN)
	}
	// turnutils_uclient allocates more than once per run: count bytes.
	if st.TURN.BytesToPeers != 2000 || st.TURN.BytesFromPeers != 2000 || st.TURN.Refused[turn.RefusedAddrFamily] != 0 ||
		st.PublicAddress6 != relay6.Addr().String() {
		t.Fatalf("TURN %+v, public_address6 %q: want 2000 bytes each way, no family refused, public_address6 %s",
			*st.TURN, st.PublicAddress6, relay6.Addr())
	}
}
