package publicaddr

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
)

// TestMappedAddressWins: behind NAT, the router's external address from
// port mapping is advertised (reachability port_mapped) and followed
// when it changes; once the router maps nothing, the private address is
// back.
func TestMappedAddressWins(t *testing.T) {
	mapped := netip.MustParseAddr("198.51.100.7")
	w := &Watcher{log: slog.New(slog.DiscardHandler), poke: make(chan struct{}, 1),
		detect: func() (netip.Addr, bool, error) { return netip.MustParseAddr("192.168.1.5"), false, nil },
		mapped: func() netip.Addr { return mapped }}
	for _, want := range []string{"198.51.100.7", "198.51.100.9", "192.168.1.5"} {
		if _, err := w.refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		reach := PortMapped
		if want == "192.168.1.5" {
			reach = PrivateOnly
		}
		if w.Current() != netip.MustParseAddr(want) || w.Reachability() != reach {
			t.Fatalf("advertising %s (%s), want %s (%s)", w.Current(), w.Reachability(), want, reach)
		}
		switch want {
		case "198.51.100.7":
			mapped = netip.MustParseAddr("198.51.100.9")
		case "198.51.100.9":
			mapped = netip.Addr{}
		}
	}
	// Public interfaces need no mapping: the mapped address is not used.
	w.detect = func() (netip.Addr, bool, error) { return netip.MustParseAddr("81.2.69.1"), true, nil }
	mapped = netip.MustParseAddr("198.51.100.7")
	w.refresh(context.Background())
	if w.Current() != netip.MustParseAddr("81.2.69.1") || w.Reachability() != Public {
		t.Fatalf("public interface: advertising %s (%s)", w.Current(), w.Reachability())
	}
}
