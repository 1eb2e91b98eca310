package kernel

import (
	"net/netip"
	"slices"
	"testing"
)

func TestHostAddrsHasLoopback(t *testing.T) {
	addrs, err := HostAddrs()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(addrs, netip.MustParseAddr("127.0.0.1")) {
		t.Fatalf("host addresses %v lack 127.0.0.1", addrs)
	}
}
