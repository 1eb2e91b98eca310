package offload

import (
	"net/netip"
	"os"
	"testing"

	"github.com/jnrelay/jnrelay/kernel/nft"
)

// BenchmarkValidateLeg is the broker's check of one leg on a relay bound
// to one address: two socket lookups (NETLINK_SOCK_DIAG), one per port.
func BenchmarkValidateLeg(b *testing.B) {
	d, err := openSockDiag()
	if err != nil {
		b.Fatal(err)
	}
	defer d.close()
	pa, pb := udpAs(b, os.Getuid(), "127.0.0.1:0", false), udpAs(b, os.Getuid(), "127.0.0.1:0", false)
	v := &validator{uid: uint32(os.Getuid()), listen: netip.MustParseAddr("127.0.0.1"), receiver: d.receiver}
	l := leg("127.0.0.1", port(pa), port(pb))
	b.ResetTimer()
	for range b.N {
		if err := v.check(l, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyThroughBroker is relayd's cost of offloading one leg
// and taking it out again through the broker: two round trips on the
// unix socket, with the leg checked (the kernel table is a fake here:
// kernel/tcfwd and kernel/nft have their own figures).
func BenchmarkApplyThroughBroker(b *testing.B) {
	br := startBroker(b, uint32(os.Getuid()), nil)
	tb, _ := br.open(b, "127.0.0.1", 16)
	pa, pb := udpAs(b, os.Getuid(), "127.0.0.1:0", false), udpAs(b, os.Getuid(), "127.0.0.1:0", false)
	l := []nft.Leg{leg("127.0.0.1", port(pa), port(pb))}
	b.ResetTimer()
	for range b.N {
		if err := tb.Apply(nil, l); err != nil {
			b.Fatal(err)
		}
		if err := tb.Apply(l, nil); err != nil {
			b.Fatal(err)
		}
	}
}
