//go:build !nofastpath

package nft_test

import (
	"net/netip"
	"testing"

	"github.com/jnrelay/jnrelay/kernel/internal/fastpathtest"
	"github.com/jnrelay/jnrelay/kernel/internal/fastpathtest/conformance"
	"github.com/jnrelay/jnrelay/kernel/nft"
)

// TestForwarding is the behaviour both fast paths share
// (kernel/internal/fastpathtest/conformance), by nftables.
func TestForwarding(t *testing.T) {
	for _, listen := range []netip.Addr{netip.IPv4Unspecified(), fastpathtest.RelayA} {
		t.Run("listen="+listen.String(), func(t *testing.T) {
			fastpathtest.SkipWithoutNetfilter(t)
			tp := fastpathtest.New(t, "jnnftc")
			conformance.Forwarding(t, tp, open(t, tp, listen), listen, true) // zero checksums: see preRule
		})
	}
}

// TestOneArm: a donor's relay, one interface, both peers beyond a router.
func TestOneArm(t *testing.T) {
	for _, listen := range []netip.Addr{netip.IPv4Unspecified(), fastpathtest.OneArmRelay} {
		t.Run("listen="+listen.String(), func(t *testing.T) {
			fastpathtest.SkipWithoutNetfilter(t)
			tp := fastpathtest.NewOneArm(t, "jnnft1")
			conformance.OneArm(t, tp, open(t, tp, listen), listen)
		})
	}
}

// TestL3Device: a router whose uplink is an L3 device (PPP, WireGuard).
func TestL3Device(t *testing.T) {
	fastpathtest.SkipWithoutNetfilter(t)
	tp, tun := fastpathtest.NewL3(t, "jnnft3")
	conformance.L3Device(t, tp, tun, open(t, tp, netip.IPv4Unspecified()))
}

// open opens the table in tp's relay namespace, closed at cleanup.
func open(t *testing.T, tp *fastpathtest.Topo, listen netip.Addr) *nft.Table {
	t.Helper()
	var (
		tb      *nft.Table
		openErr error
	)
	fastpathtest.In(t, tp.R, func() error { tb, openErr = nft.Open(nft.Config{Listen: listen}); return nil })
	if openErr != nil {
		t.Fatal(openErr)
	}
	t.Cleanup(func() { tb.Close() })
	return tb
}

// TestForwardingConntrackNAT is the shared behaviour by the flowtable
// variant's conntrack NAT (this kernel has no nf_flow_table: the
// flowtable is left out here and proven in the arm64 image).
func TestForwardingConntrackNAT(t *testing.T) {
	for _, listen := range []netip.Addr{netip.IPv4Unspecified(), fastpathtest.RelayA} {
		t.Run("listen="+listen.String(), func(t *testing.T) {
			fastpathtest.SkipWithoutNetfilter(t)
			tp := fastpathtest.New(t, "jnnftn")
			conformance.Forwarding(t, tp, openNAT(t, tp, listen), listen, false)
		})
	}
}

// TestOneArmConntrackNAT and TestL3DeviceConntrackNAT: the other two
// networks, by the flowtable variant's conntrack NAT.
func TestOneArmConntrackNAT(t *testing.T) {
	fastpathtest.SkipWithoutNetfilter(t)
	tp := fastpathtest.NewOneArm(t, "jnnfn1")
	conformance.OneArm(t, tp, openNAT(t, tp, fastpathtest.OneArmRelay), fastpathtest.OneArmRelay)
}

func TestL3DeviceConntrackNAT(t *testing.T) {
	fastpathtest.SkipWithoutNetfilter(t)
	tp, tun := fastpathtest.NewL3(t, "jnnfn3")
	conformance.L3Device(t, tp, tun, openNAT(t, tp, netip.IPv4Unspecified()))
}

// openNAT opens the flowtable variant without its flowtable in tp's relay
// namespace, closed at cleanup.
func openNAT(t *testing.T, tp *fastpathtest.Topo, listen netip.Addr) *nft.Table {
	t.Helper()
	var (
		tb      *nft.Table
		openErr error
	)
	fastpathtest.In(t, tp.R, func() error { tb, openErr = nft.OpenNATOnly(nft.Config{Listen: listen}); return nil })
	if openErr != nil {
		t.Fatal(openErr)
	}
	t.Cleanup(func() { tb.Close() })
	return tb
}

// TestHandover: a leg installed while both peers stream loses nothing
// and duplicates nothing (kernel/internal/fastpathtest/conformance).
func TestHandover(t *testing.T) {
	fastpathtest.SkipWithoutNetfilter(t)
	tp := fastpathtest.NewOneArmNAPI(t, "jnnfho")
	r := fastpathtest.OneArmRelay
	conformance.Handover(t, tp, open(t, tp, netip.IPv4Unspecified()), r, r, conformance.HandoverRounds())
}

// TestHandoverConntrackNAT: the same by the flowtable variant's
// conntrack NAT, which must not fail to insert a leg's entry either.
func TestHandoverConntrackNAT(t *testing.T) {
	fastpathtest.SkipWithoutNetfilter(t)
	tp := fastpathtest.NewOneArmNAPI(t, "jnnfhn")
	r := fastpathtest.OneArmRelay
	conformance.Handover(t, tp, openNAT(t, tp, netip.IPv4Unspecified()), r, r, conformance.HandoverRounds())
}
