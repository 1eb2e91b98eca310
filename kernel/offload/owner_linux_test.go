package offload

import (
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/jnrelay/jnrelay/kernel"
)

// TestReceiverFindsTheSocket asks the kernel's lookup about real
// sockets: the bound one is found with this process's uid, a free port
// is not, and a connected socket answers only for its peer.
func TestReceiverFindsTheSocket(t *testing.T) {
	needSockDiag(t)
	d, err := openSockDiag()
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	bound := listenUDP(t, "127.0.0.1:0")
	port := bound.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	peer := netip.MustParseAddrPort("127.0.0.2:9")
	uid, found, err := d.receiver(peer, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port))
	if err != nil || !found || uid != uint32(os.Getuid()) {
		t.Fatalf("bound socket: uid %d found %v err %v, want uid %d", uid, found, err, os.Getuid())
	}
	free := listenUDP(t, "127.0.0.1:0")
	freePort := free.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	free.Close()
	if _, found, err := d.receiver(peer, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freePort)); err != nil || found {
		t.Fatalf("closed port %d: found %v err %v, want none", freePort, found, err)
	}
	// A connected socket receives from its peer only.
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(peer))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl := c.LocalAddr().(*net.UDPAddr).AddrPort()
	if _, found, err := d.receiver(peer, cl); err != nil || !found {
		t.Fatalf("connected socket from its peer: found %v err %v", found, err)
	}
	if _, found, err := d.receiver(netip.MustParseAddrPort("127.0.0.3:9"), cl); err != nil || found {
		t.Fatalf("connected socket from another peer: found %v err %v, want none", found, err)
	}
}

func listenUDP(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestReceiverFollowsSteering: the lookup runs the sk_lookup program of
// steered ports (kernel.Steering), so the broker's leg check works for
// them too: a held port is its steered socket's, a port of the range
// that is not held, or no longer, is nobody's.
func TestReceiverFollowsSteering(t *testing.T) {
	needSockDiag(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to attach an sk_lookup program")
	}
	const port = 26460 // below the ephemeral ports, on 127.0.0.1 only
	st, err := kernel.NewSteering(netip.MustParseAddr("127.0.0.1"), port, port+3, 1)
	if kernel.SteeringUnsupported(err) {
		t.Skipf("sk_lookup unavailable here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sock := listenUDP(t, "127.0.0.1:0")
	raw, err := sock.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var setErr error
	raw.Control(func(fd uintptr) { setErr = st.SetSocket(0, int(fd)) })
	if setErr != nil {
		t.Fatal(setErr)
	}
	d, err := openSockDiag()
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	peer, local := netip.MustParseAddrPort("127.0.0.2:9"), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	lookup := func(want bool) {
		t.Helper()
		uid, found, err := d.receiver(peer, local)
		if err != nil || found != want || (found && uid != uint32(os.Getuid())) {
			t.Fatalf("port %d: uid %d found %v err %v, want found %v", port, uid, found, err, want)
		}
	}
	lookup(false)
	if err := st.Hold(port); err != nil {
		t.Fatal(err)
	}
	lookup(true)
	if err := st.Release(port); err != nil {
		t.Fatal(err)
	}
	lookup(false)
}
