package channel

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/jnrelay/jnrelay/kernel/nft"
	"github.com/jnrelay/jnrelay/kernel/offload"
)

// opener is a tableOpener whose eBPF and nftables tables are ft, or fail
// with the errors given.
func opener(via string, ft kernelTable, ebpfErr, nftErr error) tableOpener {
	return tableOpener{via: via,
		ebpf: func(netip.Addr, int) (kernelTable, error) {
			if ebpfErr != nil {
				return nil, ebpfErr
			}
			return ft, nil
		},
		nftables: func(netip.Addr, int) (kernelTable, error) {
			if nftErr != nil {
				return nil, nftErr
			}
			return ft, nil
		},
		flowtable: func(netip.Addr, int) (kernelTable, error) {
			if nftErr != nil {
				return nil, nftErr
			}
			return ft, nil
		}}
}

// TestAutoOrder: auto takes eBPF, else the flowtable, else the stateless
// rules; flowtable and nftables take only their own.
func TestAutoOrder(t *testing.T) {
	ebpfT, flowT, nftT := newFakeTable(), newFakeTable(), newFakeTable()
	unavailable := &nft.UnavailableError{Reason: "no_flowtable", Err: errors.New("no such file or directory")}
	ways := func(ebpfOK, flowOK bool) tableOpener {
		return tableOpener{via: "relayd",
			ebpf: func(netip.Addr, int) (kernelTable, error) {
				if ebpfOK {
					return ebpfT, nil
				}
				return nil, unavailable
			},
			flowtable: func(netip.Addr, int) (kernelTable, error) {
				if flowOK {
					return flowT, nil
				}
				return nil, unavailable
			},
			nftables: func(netip.Addr, int) (kernelTable, error) { return nftT, nil }}
	}
	for _, tc := range []struct {
		name           string
		ebpfOK, flowOK bool
		mode           FastPathMode
		want           *fakeTable
	}{
		{"auto, all", true, true, FastPathAuto, ebpfT},
		{"auto, no eBPF", false, true, FastPathAuto, flowT},
		{"auto, neither eBPF nor flowtable", false, false, FastPathAuto, nftT},
		{"flowtable", true, true, FastPathFlowtable, flowT},
		{"nftables", true, true, FastPathNftables, nftT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sh := &shared{log: slog.New(slog.DiscardHandler), listen: fpListen, openers: []tableOpener{ways(tc.ebpfOK, tc.flowOK)}}
			fp, err := openFastPath(sh, &fastPathCounts{}, tc.mode, 16, true)
			if err != nil || fp == nil || fp.table != kernelTable(tc.want) {
				t.Fatalf("fast path %v (err %v), want the %s one", fp, err, tc.name)
			}
			fp.close()
		})
	}
	sh := &shared{log: slog.New(slog.DiscardHandler), listen: fpListen, openers: []tableOpener{ways(false, false)}}
	if _, err := openFastPath(sh, &fastPathCounts{}, FastPathFlowtable, 16, false); !errors.Is(err, errSteeredFastPath) {
		t.Errorf("flowtable with steered ports: %v, want %v", err, errSteeredFastPath)
	}
}

func TestOpenFastPathTriesTheBrokerFirst(t *testing.T) {
	unavailable := &nft.UnavailableError{Reason: "no_cap_net_admin", Err: errors.New("operation not permitted")}
	gone := fmt.Errorf("dial: %w", offload.ErrBrokerGone)
	for _, tc := range []struct {
		name    string
		openers []tableOpener
		mode    FastPathMode
		want    *fakeTable // nil: no fast path
		wantErr bool
	}{
		{"broker serves", []tableOpener{opener("offload broker", brokerTable, nil, nil), opener("relayd", ownTable, nil, nil)}, FastPathAuto, brokerTable, false},
		{"no broker: relayd's own", []tableOpener{opener("offload broker", nil, gone, gone), opener("relayd", ownTable, nil, nil)}, FastPathEBPF, ownTable, false},
		{"broker's nftables before relayd's eBPF", []tableOpener{opener("offload broker", brokerTable, unavailable, nil), opener("relayd", ownTable, nil, nil)}, FastPathAuto, brokerTable, false},
		{"neither, auto: userspace", []tableOpener{opener("offload broker", nil, gone, gone), opener("relayd", nil, unavailable, unavailable)}, FastPathAuto, nil, false},
		{"neither, ebpf required", []tableOpener{opener("offload broker", nil, gone, gone), opener("relayd", nil, unavailable, unavailable)}, FastPathEBPF, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sh := &shared{log: slog.New(slog.DiscardHandler), listen: fpListen, openers: tc.openers}
			fp, err := openFastPath(sh, &fastPathCounts{}, tc.mode, 16, true)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr && (!strings.Contains(err.Error(), "offload broker") || !errors.As(err, new(*nft.UnavailableError))) {
				t.Fatalf("err = %v: want both ways' reasons", err)
			}
			if tc.want == nil {
				if fp != nil {
					t.Fatalf("fast path on %s, want none", fp.table.Name())
				}
				return
			}
			if fp == nil || fp.table != kernelTable(tc.want) {
				t.Fatalf("fast path %v, want %s", fp, tc.want.Name())
			}
			fp.close()
		})
	}
}

var brokerTable, ownTable = newFakeTable(), newFakeTable()

// goneTable is a table whose broker connection broke.
type goneTable struct{ *fakeTable }

func (goneTable) Counters() (map[nft.Flow]nft.Counter, error) {
	return nil, fmt.Errorf("read: %w", offload.ErrBrokerGone)
}

// TestFastPathBrokerGone: a table lost with the broker's connection
// returns every leg to userspace, and the fast path stops using it.
func TestFastPathBrokerGone(t *testing.T) {
	fp, ft, sh := newTestFastPath(t)
	c := latchedChannel(sh, 40000, Info{}, fpPeerA, fpPeerB, true)
	fp.enqueue(c, 0)
	fp.process()
	if !c.legs[0].inKernel.Load() {
		t.Fatal("leg not offloaded")
	}
	fp.table = goneTable{ft}
	fp.refresh(0)
	if c.legs[0].inKernel.Load() || len(fp.legs) != 0 || !fp.closed || !fp.gone.Load() {
		t.Fatalf("after the broker went: inKernel %v, legs %d, closed %v; want the leg in userspace", c.legs[0].inKernel.Load(), len(fp.legs), fp.closed)
	}
	// An Apply failing the same way does the same.
	fp2, ft2, sh2 := newTestFastPath(t)
	ft2.refuse = func(nft.Leg) error { return fmt.Errorf("write: %w", offload.ErrBrokerGone) }
	c2 := latchedChannel(sh2, 40000, Info{}, fpPeerA, fpPeerB, true)
	fp2.enqueue(c2, 0)
	fp2.process()
	if c2.legs[0].inKernel.Load() || !fp2.closed {
		t.Fatalf("Apply lost the broker: inKernel %v closed %v", c2.legs[0].inKernel.Load(), fp2.closed)
	}
}

// TestFastPathReopensThroughTheBroker: once the broker is back, the fast
// path gets a new table and offers it the legs the old one had and those
// latched meanwhile.
func TestFastPathReopensThroughTheBroker(t *testing.T) {
	fp, ft, sh := newTestFastPath(t)
	c := latchedChannel(sh, 40000, Info{}, fpPeerA, fpPeerB, true)
	fp.enqueue(c, 0)
	fp.process()
	fp.table = goneTable{ft}
	fp.refresh(0)
	if !fp.gone.Load() {
		t.Fatal("table not given up")
	}
	late := latchedChannel(sh, 40004, Info{}, fpPeerA, netip.MustParseAddrPort("203.0.113.21:6000"), true)
	fp.enqueue(late, 0)
	fp.process() // while gone: kept for the next table
	fresh := newFakeTable()
	attempts := 0
	fp.reopen = func() (kernelTable, error) {
		attempts++
		if attempts == 1 {
			return nil, fmt.Errorf("dial: %w", offload.ErrBrokerGone)
		}
		return fresh, nil
	}
	fp.tryReopen()
	if !fp.gone.Load() || attempts != 1 {
		t.Fatalf("after a failed attempt: gone %v, attempts %d", fp.gone.Load(), attempts)
	}
	fp.tryReopen() // within reopenInterval: no attempt
	if attempts != 1 {
		t.Fatalf("attempts %d within %s, want 1", attempts, reopenInterval)
	}
	fp.reopenedAt = fp.reopenedAt.Add(-reopenInterval)
	fp.tryReopen()
	if fp.gone.Load() || fp.closed || fp.table != kernelTable(fresh) {
		t.Fatalf("not reopened: gone %v closed %v", fp.gone.Load(), fp.closed)
	}
	fp.process()
	for _, ch := range []*Channel{c, late} {
		fa, fb := flows(ch, *ch.legs[0].sides[0].latched.Load(), *ch.legs[0].sides[1].latched.Load())
		if !fresh.installed(fa) || !fresh.installed(fb) || !ch.legs[0].inKernel.Load() {
			t.Errorf("channel on %d not offered to the new table: %v", ch.info.LocalPort, fresh.flows)
		}
	}
}

// TestFastPathBrokerGoneMidTransaction: legs queued when the broker
// went wait for its next table, whatever chunk they were in.
func TestFastPathBrokerGoneMidTransaction(t *testing.T) {
	fp, ft, sh := newTestFastPath(t)
	ft.refuse = func(nft.Leg) error { return fmt.Errorf("write: %w", offload.ErrBrokerGone) }
	var chans []*Channel
	for i := range maxLegsPerTransaction + 3 {
		a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 5000)
		b := netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 6000)
		c := latchedChannel(sh, 40000+4*(i%25), Info{}, a, b, true)
		chans = append(chans, c)
		fp.enqueue(c, 0)
	}
	fp.process()
	if !fp.gone.Load() || len(fp.orphans) != len(chans) {
		t.Fatalf("gone %v, %d legs kept for the next table, want %d", fp.gone.Load(), len(fp.orphans), len(chans))
	}
	fresh := newFakeTable()
	fp.reopen = func() (kernelTable, error) { return fresh, nil }
	fp.tryReopen()
	fp.process()
	if n := len(fresh.flows); n != 2*len(chans) {
		t.Fatalf("the new table got %d flows, want %d", n, 2*len(chans))
	}
}
