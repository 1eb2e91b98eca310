package publicaddr

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/relayd/stun"
)

func TestMappedAddress(t *testing.T) {
	srv, err := stun.New(stun.Config{Listen: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)

	// A server that never answers, listed first: the next one is asked.
	mute, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	start := time.Now()
	a, server, err := MappedAddress(ctx, netip.MustParseAddr("127.0.0.1"), []string{mute.LocalAddr().String(), srv.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if a != netip.MustParseAddr("127.0.0.1") || server != srv.Addr().String() {
		t.Fatalf("mapped %s from %s", a, server)
	}
	if time.Since(start) > 2*stunTimeout {
		t.Fatalf("took %s", time.Since(start))
	}
	if _, _, err := MappedAddress(ctx, netip.MustParseAddr("127.0.0.1"), []string{mute.LocalAddr().String()}); err == nil {
		t.Fatal("a mute server answered")
	}
}
