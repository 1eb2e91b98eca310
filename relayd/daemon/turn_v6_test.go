package daemon

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	pionturn "github.com/pion/turn/v5"

	"github.com/jnrelay/jnrelay/internal/testport"
	"github.com/jnrelay/jnrelay/relayd/turn"
)

// TestBuiltinTURNDualStack: on an unspecified listen address the TURN
// server takes IPv6 clients and gives relayed addresses of either family
// at public_address and public_address6; XEP-0215 announces it at the
// IPv6 address too, and the status shows that address.
func TestBuiltinTURNDualStack(t *testing.T) {
	cfg := testConfig(t)
	cfg.ListenAddress, cfg.PublicAddress6 = "0.0.0.0", "::1"
	cfg.STUN.Enabled = false
	cfg.TURN.Builtin.Enabled = true
	cfg.TURN.Builtin.Port = testport.UDPAndTCP(t)
	state := t.TempDir()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d, err := New(t.Context(), cfg, Options{Version: "test", StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	if got := d.Status().PublicAddress6; got != "::1" {
		t.Fatalf("status public_address6 %q, want ::1", got)
	}
	if ext := d.external.Load(); ext.TURN == nil || ext.TURN.Host6 == nil || ext.TURN.Host6() != netip.IPv6Loopback() {
		t.Fatal("dual-stack TURN server not announced at the public IPv6 address")
	}
	secret, err := os.ReadFile(filepath.Join(state, turn.SecretFile))
	if err != nil {
		t.Fatal(err)
	}
	server := netip.AddrPortFrom(netip.IPv6Loopback(), uint16(cfg.TURN.Builtin.Port)).String()
	for family, want := range map[pionturn.RequestedAddressFamily]netip.Addr{
		pionturn.RequestedAddressFamilyIPv6: netip.IPv6Loopback(),
		pionturn.RequestedAddressFamilyIPv4: netip.MustParseAddr("127.0.0.1"),
	} {
		conn, err := net.ListenPacket("udp6", "[::1]:0")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		user := turn.Username(time.Now().Add(time.Hour), "dual")
		c, err := pionturn.NewClient(&pionturn.ClientConfig{TURNServerAddr: server, STUNServerAddr: server, Username: user,
			Password: turn.Password(bytes.TrimSpace(secret), user), Realm: cfg.TURN.Builtin.Realm, Conn: conn,
			RTO: 200 * time.Millisecond, RequestedAddressFamily: family})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Listen(); err != nil {
			t.Fatal(err)
		}
		relay, err := c.Allocate()
		if err != nil {
			t.Fatalf("%v allocation over IPv6: %v", family, err)
		}
		defer relay.Close()
		got := relay.LocalAddr().(*net.UDPAddr).AddrPort()
		if got.Addr() != want || int(got.Port()) < cfg.Ports.Min || int(got.Port()) > cfg.Ports.Max {
			t.Fatalf("%v relayed address %s, want %s in %d-%d", family, got, want, cfg.Ports.Min, cfg.Ports.Max)
		}
	}
}
