//go:build !nofastpath

package nft

import (
	"fmt"
	"net/netip"
	"os"
	"testing"
)

// BenchmarkConntrackDump is the flowtable variant's read of its legs'
// entries (what Counters costs each second) on a busy home router's
// table: 5,000 masquerade entries of the LAN's own traffic and 10 of
// relayd's legs, asked for with the kernel filter and, as a kernel that
// ignores it (before 5.15) or refused it does, for the whole table.
// Entries carry accounting, as the flowtable variant has it on. The
// kernel walks its whole hash table for any dump (every namespace's
// entries share it), so "empty" is the filtered dump from a namespace
// with no entries at all: the floor no filter takes away.
func BenchmarkConntrackDump(b *testing.B) {
	const foreign, legs = 5000, 10
	var c, empty *conntrack
	inNewNetns(b, func() (err error) { empty, err = openConntrack(); return err })
	b.Cleanup(func() { empty.close() })
	inNewNetns(b, func() (err error) {
		if err := os.WriteFile(acctSysctl, []byte("1\n"), 0); err != nil {
			return fmt.Errorf("turn conntrack accounting on: %w", err)
		}
		if c, err = openConntrack(); err != nil {
			return err
		}
		lan, wan, relay := netip.MustParseAddr("10.9.0.2"), netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("192.0.2.1")
		for i := range foreign {
			port := uint16(10000 + i)
			if err := c.insert(testEntry{orig: ctTuple{Src: netip.AddrPortFrom(lan, port), Dst: netip.MustParseAddrPort("203.0.113.7:443")},
				snat: netip.AddrPortFrom(wan, port)}); err != nil {
				return err
			}
		}
		for i := range legs {
			p := uint16(28000 + 4*i)
			if err := c.insert(testEntry{zone: DefaultZone, orig: ctTuple{Src: netip.AddrPortFrom(netip.MustParseAddr("203.0.113.20"), 5000+p), Dst: netip.AddrPortFrom(wan, p)},
				dnat: netip.AddrPortFrom(netip.MustParseAddr("10.9.0.30"), 6000+p), snat: netip.AddrPortFrom(relay, p+2)}); err != nil {
				return err
			}
		}
		return nil
	})
	b.Cleanup(func() { c.close() })
	q := ctQuery{zone: DefaultZone, nated: true}
	for _, mode := range []struct {
		name       string
		c          *conntrack
		wholeTable bool
		want       int
	}{{"kernel-filter", c, false, legs}, {"whole-table", c, true, legs}, {"empty", empty, false, 0}} {
		b.Run(mode.name, func(b *testing.B) {
			mode.c.wholeTable = mode.wholeTable
			for range b.N {
				es, err := mode.c.dump(q)
				if err != nil {
					b.Fatal(err)
				}
				if len(es) != mode.want {
					b.Fatalf("%d of relayd's entries, want %d", len(es), mode.want)
				}
			}
			b.ReportMetric(float64(mode.c.last.returned), "entries/dump")
		})
	}
}
