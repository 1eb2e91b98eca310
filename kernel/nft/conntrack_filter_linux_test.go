//go:build !nofastpath

package nft

import (
	"encoding/binary"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel/internal/fastpathtest"
)

// fakeCtConn is a kernel that either refuses filtered dumps (refuse) or
// ignores their attributes, as kernels before 5.15 do, and returns
// entries whatever the request.
type fakeCtConn struct {
	entries  []ctEntry
	refuse   error
	requests [][]byte // each request's attributes
}

func (f *fakeCtConn) Execute(m netlink.Message) ([]netlink.Message, error) {
	attrs := m.Data[4:]
	f.requests = append(f.requests, attrs)
	if len(attrs) > 0 && f.refuse != nil {
		return nil, f.refuse
	}
	var out []netlink.Message
	for _, e := range f.entries {
		out = append(out, netlink.Message{Data: encodeEntry(e)})
	}
	return out, nil
}

func (f *fakeCtConn) Close() error { return nil }

// fakeTable is one leg's entry in zone 19022, an entry of the zone
// without NAT, a doubly NATed one of another zone (NAT reflection) and a
// masquerade one.
func fakeTable() []ctEntry {
	tuple := func(src, dst string) ctTuple {
		return ctTuple{Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst)}
	}
	both := uint32(ipsSrcNAT | ipsDstNAT | 0x18e) // with SEEN_REPLY, ASSURED, CONFIRMED, *_NAT_DONE
	return []ctEntry{
		{ID: 1, Zone: DefaultZone, Status: both, Orig: tuple("192.0.2.2:5000", "192.0.2.1:28000"), Reply: tuple("198.51.100.2:6000", "198.51.100.1:28002"),
			OrigCount: Counter{Packets: 3, Bytes: 114}, ReplyCount: Counter{Packets: 2, Bytes: 96}},
		{ID: 2, Zone: DefaultZone, Status: 0x18e, Orig: tuple("192.0.2.3:5000", "192.0.2.1:28004"), Reply: tuple("192.0.2.1:28004", "192.0.2.3:5000")},
		{ID: 3, Zone: 7, Status: both, Orig: tuple("10.0.0.2:4000", "203.0.113.1:443"), Reply: tuple("10.0.0.9:443", "10.0.0.1:4000")},
		{ID: 4, Zone: 0, Status: ipsSrcNAT | 0x18e, Orig: tuple("10.0.0.2:4001", "203.0.113.7:443"), Reply: tuple("203.0.113.7:443", "203.0.113.1:4001")},
	}
}

func ids(es []ctEntry) []uint32 {
	var out []uint32
	for _, e := range es {
		out = append(out, e.ID)
	}
	slices.Sort(out)
	return out
}

// A kernel that ignores the filter returns every entry: the query's test
// is applied here all the same, and the filter is kept (it costs nothing
// and a newer kernel under the same relayd honours it).
func TestDumpFiltersWhatTheKernelIgnores(t *testing.T) {
	f := &fakeCtConn{entries: fakeTable()}
	c := &conntrack{conn: f}
	for _, tc := range []struct {
		q    ctQuery
		want []uint32
	}{{ctQuery{zone: DefaultZone, nated: true}, []uint32{1}}, {ctQuery{zone: DefaultZone}, []uint32{1, 2}}, {ctQuery{zone: 7, nated: true}, []uint32{3}}} {
		es, err := c.dump(tc.q)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(es); !slices.Equal(got, tc.want) {
			t.Errorf("%+v: entries %v, want %v", tc.q, got, tc.want)
		}
		if c.last != (dumpStats{returned: 4, kept: len(tc.want)}) {
			t.Errorf("%+v: stats %+v", tc.q, c.last)
		}
	}
	if c.wholeTable {
		t.Error("the filter was dropped although the kernel took it")
	}
	for i, r := range f.requests {
		if len(r) == 0 {
			t.Errorf("request %d asked for the whole table", i)
		}
	}
	if e := fakeTable()[0]; !slices.EqualFunc([]ctEntry{e}, mustDump(t, c, ctQuery{zone: DefaultZone, nated: true}), func(a, b ctEntry) bool { return a == b }) {
		t.Errorf("entry not parsed back as it was: want %+v", e)
	}
}

func mustDump(t *testing.T, c *conntrack, q ctQuery) []ctEntry {
	t.Helper()
	es, err := c.dump(q)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// A kernel that refuses the filter (no CONFIG_NF_CONNTRACK_ZONES: the
// zone attribute is EOPNOTSUPP from 6.8 on) is asked again for the whole
// table, and from then on only for it.
func TestDumpFallsBackWhenTheFilterIsRefused(t *testing.T) {
	for _, refusal := range []error{unix.EOPNOTSUPP, unix.EINVAL} {
		f := &fakeCtConn{entries: fakeTable(), refuse: refusal}
		c := &conntrack{conn: f}
		for range 2 {
			es, err := c.dump(ctQuery{zone: DefaultZone, nated: true})
			if err != nil {
				t.Fatalf("%v: %v", refusal, err)
			}
			if got := ids(es); !slices.Equal(got, []uint32{1}) {
				t.Errorf("%v: entries %v, want [1]", refusal, got)
			}
		}
		if !c.wholeTable {
			t.Errorf("%v: still filtering", refusal)
		}
		// filtered (refused), whole table, whole table
		if len(f.requests) != 3 || len(f.requests[0]) == 0 || len(f.requests[1]) != 0 || len(f.requests[2]) != 0 {
			t.Errorf("%v: requests %x", refusal, f.requests)
		}
	}
	// Any other failure is the dump's, not the filter's.
	f := &fakeCtConn{entries: fakeTable(), refuse: unix.EPERM}
	c := &conntrack{conn: f}
	if _, err := c.dump(ctQuery{zone: DefaultZone}); !errors.Is(err, unix.EPERM) {
		t.Errorf("EPERM: %v", err)
	}
	if c.wholeTable || len(f.requests) != 1 {
		t.Errorf("EPERM fell back: %d requests", len(f.requests))
	}
}

// The request carries the zone, and the NAT status bits with their mask
// (a status without a mask would mean the same to 5.15 and later, but an
// explicit one says it).
func TestQueryAttrs(t *testing.T) {
	for _, q := range []ctQuery{{zone: DefaultZone}, {zone: 4242, nated: true}} {
		b, err := q.attrs()
		if err != nil {
			t.Fatal(err)
		}
		ad, err := netlink.NewAttributeDecoder(b)
		if err != nil {
			t.Fatal(err)
		}
		ad.ByteOrder = binary.BigEndian
		got := map[uint16]uint32{}
		for ad.Next() {
			switch ad.Type() {
			case ctaZone:
				got[ctaZone] = uint32(ad.Uint16())
			default:
				got[ad.Type()] = ad.Uint32()
			}
		}
		want := map[uint16]uint32{ctaZone: uint32(q.zone)}
		if q.nated {
			want[ctaStatus], want[ctaStatusMask] = ipsSrcNAT|ipsDstNAT, ipsSrcNAT|ipsDstNAT
		}
		if !maps.Equal(got, want) {
			t.Errorf("%+v: attributes %v, want %v", q, got, want)
		}
	}
}

// TestConntrackDumpFilter runs the flowtable variant's NAT on this kernel
// with two legs carrying traffic and foreign entries around them: the
// kernel-filtered dumps return the legs' entries and nothing else (from
// Linux 6.8; from 5.15 the doubly NATed foreign one too, dropped here),
// the whole-table dumps the same entries among all the others, the
// counters are the same either way, and Close deletes every entry of the
// zone, the one without NAT included.
func TestConntrackDumpFilter(t *testing.T) {
	tp := newTopo(t)
	tb := tp.open(t, Config{Flowtable: true, noFlowtable: true})
	a1 := fastpathtest.UDP(t, tp.A, netip.AddrPortFrom(fastpathtest.PeerA, 5000))
	a2 := fastpathtest.UDP(t, tp.A, netip.AddrPortFrom(fastpathtest.PeerA, 5002))
	b1 := fastpathtest.UDP(t, tp.B, netip.AddrPortFrom(fastpathtest.PeerB, 6000))
	b2 := fastpathtest.UDP(t, tp.B, netip.AddrPortFrom(fastpathtest.PeerB, 6002))
	legs := []Leg{
		{A: Flow{Peer: fastpathtest.Addr(a1), Port: 28000}, B: Flow{Peer: fastpathtest.Addr(b1), Port: 28002}, LocalA: fastpathtest.RelayA, LocalB: fastpathtest.RelayB},
		{A: Flow{Peer: fastpathtest.Addr(a2), Port: 28004}, B: Flow{Peer: fastpathtest.Addr(b2), Port: 28006}, LocalA: fastpathtest.RelayA, LocalB: fastpathtest.RelayB},
	}
	if err := tb.Apply(nil, legs); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		fastpathtest.Send(t, a1, []byte("ten bytes!"), netip.AddrPortFrom(fastpathtest.RelayA, 28000))
		fastpathtest.Expect(t, b1, []byte("ten bytes!"), netip.AddrPortFrom(fastpathtest.RelayB, 28002))
		if i < 2 {
			fastpathtest.Send(t, b1, []byte("twenty bytes, twenty"), netip.AddrPortFrom(fastpathtest.RelayB, 28002))
			fastpathtest.Expect(t, a1, []byte("twenty bytes, twenty"), netip.AddrPortFrom(fastpathtest.RelayA, 28000))
		}
	}
	fastpathtest.Send(t, b2, []byte("b first"), netip.AddrPortFrom(fastpathtest.RelayB, 28006))
	fastpathtest.Expect(t, a2, []byte("b first"), netip.AddrPortFrom(fastpathtest.RelayA, 28004))
	want := map[Flow]Counter{legs[0].A: {3, 30}, legs[0].B: {2, 40}, legs[1].A: {}, legs[1].B: {1, 7}}

	// The foreign entries, made over a socket of relayd's namespace.
	var other *conntrack
	fastpathtest.In(t, tp.R, func() (err error) { other, err = openConntrack(); return err })
	defer other.close()
	tuple := func(src, dst string) ctTuple {
		return ctTuple{Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst)}
	}
	foreign := []testEntry{
		// relayd's zone, no NAT: wanted by Close, not by the counters
		{zone: DefaultZone, orig: tuple("192.0.2.9:5000", "192.0.2.1:28100")},
		// NAT reflection in another zone: passes the status filter
		{zone: DefaultZone + 1, orig: tuple("10.9.0.2:4000", "203.0.113.1:443"),
			dnat: netip.MustParseAddrPort("10.9.0.9:443"), snat: netip.MustParseAddrPort("10.9.0.1:4000")},
	}
	for i := range 20 { // masquerade, zone 0
		foreign = append(foreign, testEntry{orig: ctTuple{Src: netip.AddrPortFrom(netip.MustParseAddr("10.9.0.2"), uint16(30000+i)), Dst: netip.MustParseAddrPort("203.0.113.7:443")},
			snat: netip.AddrPortFrom(fastpathtest.RelayB, uint16(30000+i))})
	}
	for _, e := range foreign {
		if err := other.insert(e); err != nil {
			t.Fatal(err)
		}
	}

	ct := tb.flow.ct
	legsQ, zoneQ := ctQuery{zone: DefaultZone, nated: true}, ctQuery{zone: DefaultZone}
	filtered := mustDump(t, ct, legsQ)
	filteredStats := ct.last
	filteredZone := mustDump(t, ct, zoneQ)
	filteredZoneStats := ct.last
	csFiltered, err := tb.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if ct.wholeTable {
		t.Fatal("this kernel refused the filter")
	}
	ct.wholeTable = true
	whole := mustDump(t, ct, legsQ)
	wholeStats := ct.last
	wholeZone := mustDump(t, ct, zoneQ)
	csWhole, err := tb.Counters()
	if err != nil {
		t.Fatal(err)
	}

	if len(filtered) != 2 || !slices.Equal(ids(filtered), ids(whole)) {
		t.Errorf("legs' entries: filtered %+v, whole table %+v", filtered, whole)
	}
	if len(filteredZone) != 3 || !slices.Equal(ids(filteredZone), ids(wholeZone)) {
		t.Errorf("zone's entries: filtered %+v, whole table %+v", filteredZone, wholeZone)
	}
	if n := len(foreign) + 2; wholeStats.returned < n {
		t.Errorf("the whole table is %d entries, want at least %d", wholeStats.returned, n)
	}
	switch {
	case kernelAtLeast(t, 6, 8):
		if filteredStats.returned != 2 || filteredZoneStats.returned != 3 {
			t.Errorf("the kernel returned %d and %d entries, want only the zone's (2 NATed, 3 in all)", filteredStats.returned, filteredZoneStats.returned)
		}
	case kernelAtLeast(t, 5, 15):
		if filteredStats.returned != 3 {
			t.Errorf("the kernel returned %d NATed entries, want 3 (no zone filter before 6.8)", filteredStats.returned)
		}
	}
	t.Logf("entries returned: filtered %d (zone %d), whole table %d", filteredStats.returned, filteredZoneStats.returned, wholeStats.returned)
	if !maps.Equal(csFiltered, want) || !maps.Equal(csWhole, want) {
		t.Errorf("counters: filtered %v, whole table %v, want %v", csFiltered, csWhole, want)
	}

	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	other.wholeTable = true
	if left := mustDump(t, other, zoneQ); len(left) != 0 {
		t.Errorf("after Close the zone holds %+v", left)
	}
	if left := mustDump(t, other, ctQuery{zone: 0}); len(left) != 20 {
		t.Errorf("after Close zone 0 holds %d entries, want the 20 foreign ones", len(left))
	}
}

// peekZoneStatus reads what the full decoder reads, takes a missing zone
// for zone 0 (the kernel sends none for it), and survives any truncation.
func TestPeekZoneStatus(t *testing.T) {
	for _, e := range fakeTable() {
		b := encodeEntry(e)[4:]
		if z, s := peekZoneStatus(b); z != e.Zone || s != e.Status {
			t.Errorf("entry %d: zone %d status %#x, want %d %#x", e.ID, z, s, e.Zone, e.Status)
		}
		for n := range len(b) {
			peekZoneStatus(b[:n])
		}
	}
	e := fakeTable()[0]
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Nested(ctaTupleOrig, func(nae *netlink.AttributeEncoder) error { encodeTuple(nae, e.Orig); return nil })
	ae.Uint32(ctaStatus, e.Status)
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if z, s := peekZoneStatus(b); z != 0 || s != e.Status {
		t.Errorf("no CTA_ZONE: zone %d status %#x, want 0 %#x", z, s, e.Status)
	}
}
