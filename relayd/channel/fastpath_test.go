package channel

import (
	"errors"
	"log/slog"
	"maps"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/kernel/nft"
)

// fakeTable is a kernelTable in memory: the flows installed and the
// counters a test says the kernel reached.
type fakeTable struct {
	mu       sync.Mutex
	flows    map[nft.Flow]nft.Leg
	counters map[nft.Flow]nft.Counter
	refuse   func(nft.Leg) error // the error Apply returns for a leg to add; nil = accept
	applies  int
	closed   bool
}

func newFakeTable() *fakeTable {
	return &fakeTable{flows: map[nft.Flow]nft.Leg{}, counters: map[nft.Flow]nft.Counter{}}
}

func (f *fakeTable) Apply(remove, add []nft.Leg) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies++
	for _, l := range add {
		if f.refuse != nil {
			if err := f.refuse(l); err != nil {
				return err
			}
		}
	}
	for _, l := range remove {
		delete(f.flows, l.A)
		delete(f.flows, l.B)
	}
	for _, l := range add {
		f.flows[l.A], f.flows[l.B] = l, l
	}
	return nil
}

func (f *fakeTable) Counters() (map[nft.Flow]nft.Counter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.counters), nil
}

func (f *fakeTable) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	clear(f.flows)
	return nil
}

func (f *fakeTable) Name() string { return "fake table" }

// installed reports whether flow is in the table.
func (f *fakeTable) installed(flow nft.Flow) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.flows[flow]
	return ok
}

// count sets what the kernel forwarded on flow so far.
func (f *fakeTable) count(flow nft.Flow, packets, bytes uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counters[flow] = nft.Counter{Packets: packets, Bytes: bytes}
}

var (
	fpListen = netip.MustParseAddr("192.0.2.1")
	fpPeerA  = netip.MustParseAddrPort("198.51.100.10:5000")
	fpPeerB  = netip.MustParseAddrPort("203.0.113.20:6000")
)

// newTestFastPath is a fast path over a fakeTable with no goroutine of its
// own: the test calls process and refresh itself, so every step is done
// when the call returns.
func newTestFastPath(t *testing.T) (*fastPath, *fakeTable, *shared) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	sh := &shared{log: log, listen: fpListen, ports: newPortTable(40000, 40099)}
	sh.guard = newSprayGuard(0, log, nil) // detection off
	ft := newFakeTable()
	done := make(chan struct{})
	close(done)
	fp := &fastPath{sh: sh, log: log, table: ft, epoch: time.Now(), legs: map[legRef]*offloaded{}, counts: &fastPathCounts{},
		work: make(chan struct{}, 1), poll: make(chan struct{}, 1), cancel: func() {}, done: done}
	return fp, ft, sh
}

// latchedChannel is a channel on base..base+3 whose RTP leg has peer a on
// the requester's side and b on the other, confirmed or not.
func latchedChannel(sh *shared, base int, info Info, a, b netip.AddrPort, confirmed bool) *Channel {
	info.ID, info.LocalPort, info.RemotePort = "test", base, base+2
	c := newChannel(base, info, time.Second, sh)
	for s, p := range [2]netip.AddrPort{a, b} {
		sd := &c.legs[0].sides[s]
		sd.latched.Store(newAddrPort(p))
		sd.confirmed.Store(confirmed)
	}
	return c
}

// flows are leg 0's two flows as the fast path must install them.
func flows(c *Channel, a, b netip.AddrPort) (nft.Flow, nft.Flow) {
	return nft.Flow{Peer: a, Port: uint16(c.info.LocalPort)}, nft.Flow{Peer: b, Port: uint16(c.info.RemotePort)}
}

func TestFastPathOffloadsConfirmedLegsOnly(t *testing.T) {
	fp, ft, sh := newTestFastPath(t)
	confirmed := latchedChannel(sh, 40000, Info{}, fpPeerA, fpPeerB, true)
	tentative := latchedChannel(sh, 40004, Info{}, fpPeerA, netip.MustParseAddrPort("203.0.113.21:6000"), false)
	for _, c := range []*Channel{confirmed, tentative} {
		fp.enqueue(c, 0)
		fp.enqueue(c, 1) // never latched: nothing to install
	}
	fp.process()

	fa, fb := flows(confirmed, fpPeerA, fpPeerB)
	if !ft.installed(fa) || !ft.installed(fb) {
		t.Fatalf("confirmed leg not installed: %v", ft.flows)
	}
	if !confirmed.legs[0].inKernel.Load() || confirmed.legs[1].inKernel.Load() {
		t.Errorf("inKernel = %v, %v; want true, false", confirmed.legs[0].inKernel.Load(), confirmed.legs[1].inKernel.Load())
	}
	if tentative.offloaded() || len(ft.flows) != 2 {
		t.Errorf("a tentative leg went to the kernel: %v", ft.flows)
	}
	st := fp.counts.stats(true)
	if st.Offloads != 1 || st.OffloadedNow != 1 {
		t.Errorf("offloads %d, now %d; want 1, 1", st.Offloads, st.OffloadedNow)
	}
	// Queued again with nothing changed: no second transaction.
	applies := ft.applies
	fp.enqueue(confirmed, 0)
	fp.process()
	if ft.applies != applies {
		t.Errorf("an unchanged leg was applied again")
	}
}

func TestFastPathKeepsLegsInUserspaceWithReasons(t *testing.T) {
	fp, ft, sh := newTestFastPath(t)
	limited := latchedChannel(sh, 40000, Info{MaxKbps: 64}, fpPeerA, fpPeerB, true)
	v6 := latchedChannel(sh, 40004, Info{}, netip.MustParseAddrPort("[2001:db8::1]:5000"), fpPeerB, true)
	conflicting := latchedChannel(sh, 40008, Info{}, netip.MustParseAddrPort("198.51.100.11:5000"), fpPeerB, true)
	ft.refuse = func(l nft.Leg) error {
		if l.A.Port == 40008 {
			return nft.ErrConflict
		}
		return nil
	}
	for _, c := range []*Channel{limited, v6, conflicting} {
		fp.enqueue(c, 0)
	}
	fp.process()
	if len(ft.flows) != 0 {
		t.Errorf("installed %v, want nothing", ft.flows)
	}
	for _, c := range []*Channel{limited, v6, conflicting} {
		if c.offloaded() {
			t.Errorf("channel on %d offloaded", c.info.LocalPort)
		}
	}
	got := fp.counts.stats(true).NotOffloaded
	want := map[string]uint64{NotOffloadedRateLimited: 1, NotOffloadedIPv6: 1, NotOffloadedConflict: 1,
		NotOffloadedKernel: 0, NotOffloadedRoute: 0, NotOffloadedCeiling: 0}
	if !maps.Equal(got, want) {
		t.Errorf("not offloaded %v, want %v", got, want)
	}
}

func TestFastPathCreditsCounters(t *testing.T) {
	fp, ft, sh := newTestFastPath(t)
	c := latchedChannel(sh, 40000, Info{}, fpPeerA, fpPeerB, true)
	fp.enqueue(c, 0)
	fp.process()
	fa, fb := flows(c, fpPeerA, fpPeerB)

	ft.count(fa, 10, 1000)
	fp.refresh(0)
	s := c.stats.snapshot()
	if s.Packets[LocalToRemote] != 10 || s.Bytes[LocalToRemote] != 1000 || s.Offloaded[LocalToRemote] != 10 ||
		s.Packets[RemoteToLocal] != 0 {
		t.Fatalf("after the first read: %+v", s)
	}
	if c.legs[0].sides[0].lastSeen.Load() == 0 || c.lastForward.Load() == 0 {
		t.Errorf("the forwarding peer's last-seen or the channel's last forward not moved")
	}
	if c.legs[0].sides[1].lastSeen.Load() != 0 {
		t.Errorf("the silent peer's last-seen moved")
	}

	// Only what is new since the last read is credited.
	ft.count(fa, 15, 1500)
	ft.count(fb, 4, 400)
	fp.refresh(0)
	s = c.stats.snapshot()
	if s.Packets != [numDirections]uint64{15, 4} || s.Bytes != [numDirections]uint64{1500, 400} || s.Offloaded != [numDirections]uint64{15, 4} {
		t.Errorf("after the second read: %+v", s)
	}
	if !fp.fresh(time.Minute) {
		t.Errorf("counters read just now are not fresh")
	}
}

func TestFastPathPacketCeilingReturnsLegToUserspace(t *testing.T) {
	fp, ft, sh := newTestFastPath(t)
	c := latchedChannel(sh, 40000, Info{}, fpPeerA, fpPeerB, true)
	c.ppsInterval, c.ppsBurst = int64(time.Second)/100, int64(time.Second/2) // 100 datagrams a second
	fp.enqueue(c, 0)
	fp.process()
	fa, _ := flows(c, fpPeerA, fpPeerB)
	if !ft.installed(fa) {
		t.Fatal("leg not installed")
	}

	ft.count(fa, 1_000_000, 172_000_000) // a loop: far past the ceiling since the install
	fp.refresh(0)
	if !c.legs[0].overCeiling.Load() {
		t.Fatal("leg over the ceiling not marked")
	}
	if got := c.stats.snapshot().Packets[LocalToRemote]; got != 1_000_000 {
		t.Errorf("credited %d, want what the kernel forwarded (1000000)", got)
	}
	fp.process() // the ceiling queued the leg again
	if ft.installed(fa) || c.offloaded() {
		t.Errorf("leg over the ceiling still in the kernel")
	}
	if got := fp.counts.stats(true).NotOffloaded[NotOffloadedCeiling]; got != 1 {
		t.Errorf("packet_ceiling count %d, want 1", got)
	}
}

func TestFastPathRetire(t *testing.T) {
	fp, ft, sh := newTestFastPath(t)
	c := latchedChannel(sh, 40000, Info{}, fpPeerA, fpPeerB, true)
	other := latchedChannel(sh, 40004, Info{}, netip.MustParseAddrPort("198.51.100.11:5000"), fpPeerB, true)
	fp.enqueue(c, 0)
	fp.enqueue(other, 0)
	fp.process()
	fa, _ := flows(c, fpPeerA, fpPeerB)
	oa, _ := flows(other, netip.MustParseAddrPort("198.51.100.11:5000"), fpPeerB)

	ft.count(fa, 3, 300)
	fp.retire(c, true) // a final read first: the channel's totals include the kernel's last datagrams
	if got := c.stats.snapshot().Packets[LocalToRemote]; got != 3 {
		t.Errorf("final counters credited %d, want 3", got)
	}
	if ft.installed(fa) || c.offloaded() {
		t.Errorf("retired channel still in the kernel")
	}
	if !ft.installed(oa) || !other.offloaded() {
		t.Errorf("another channel's leg left the kernel")
	}
	if now := fp.counts.stats(true).OffloadedNow; now != 1 {
		t.Errorf("%d legs in the kernel, want 1", now)
	}
}

func TestFastPathIgnoresEndingChannels(t *testing.T) {
	fp, ft, sh := newTestFastPath(t)
	c := latchedChannel(sh, 40000, Info{}, fpPeerA, fpPeerB, true)
	c.ending.Store(true)
	fp.enqueue(c, 0)
	fp.process()
	if len(ft.flows) != 0 || c.offloaded() {
		t.Errorf("an ending channel went to the kernel")
	}
}

func TestFastPathCloseReturnsLegsToUserspace(t *testing.T) {
	fp, ft, sh := newTestFastPath(t)
	c := latchedChannel(sh, 40000, Info{}, fpPeerA, fpPeerB, true)
	fp.enqueue(c, 0)
	fp.process()
	fa, _ := flows(c, fpPeerA, fpPeerB)
	ft.count(fa, 7, 700)

	fp.close()
	if !ft.closed {
		t.Error("table not closed")
	}
	if c.offloaded() {
		t.Error("leg still marked in the kernel")
	}
	if got := c.stats.snapshot().Packets[LocalToRemote]; got != 7 {
		t.Errorf("last counters credited %d, want 7", got)
	}
	if now := fp.counts.stats(false).OffloadedNow; now != 0 {
		t.Errorf("%d legs in the kernel after close", now)
	}
	// Closed: nothing goes in any more, and a second close is harmless.
	fp.enqueue(c, 0)
	fp.process()
	if ft.installed(fa) {
		t.Error("a leg went to a closed table")
	}
	fp.close()
}

func TestFastPathKernelErrorKeepsLegInUserspace(t *testing.T) {
	fp, ft, sh := newTestFastPath(t)
	c := latchedChannel(sh, 40000, Info{}, fpPeerA, fpPeerB, true)
	ft.refuse = func(nft.Leg) error { return errors.New("map full") }
	fp.enqueue(c, 0)
	fp.process()
	if c.offloaded() || len(ft.flows) != 0 {
		t.Error("a refused leg is marked in the kernel")
	}
	if got := fp.counts.stats(true).NotOffloaded[NotOffloadedKernel]; got != 1 {
		t.Errorf("kernel count %d, want 1", got)
	}
}
