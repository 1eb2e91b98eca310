//go:build !nofastpath

package nft

import (
	"errors"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/jnrelay/jnrelay/kernel/internal/fastpathtest"
)

// The tests run in fastpathtest's network: peers A and B, relay R.
type topo struct{ *fastpathtest.Topo }

func newTopo(t *testing.T) *topo {
	fastpathtest.SkipWithoutNetfilter(t)
	return &topo{fastpathtest.New(t, "jnnft")}
}

func (tp *topo) open(t *testing.T, cfg Config) *Table {
	t.Helper()
	var (
		tb      *Table
		openErr error
	)
	fastpathtest.In(t, tp.R, func() error { tb, openErr = Open(cfg); return nil })
	if openErr != nil {
		t.Fatal(openErr)
	}
	t.Cleanup(func() { tb.Close() })
	return tb
}

// nftList is `nft list table` in the relay namespace ("" if absent).
func (tp *topo) nftList(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", tp.R, "nft", "list", "table", "ip", name).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No such file") {
			return ""
		}
		t.Fatalf("nft list: %v: %s", err, out)
	}
	return string(out)
}

func TestConflictAndInvalid(t *testing.T) {
	tp := newTopo(t)
	tb := tp.open(t, Config{})
	leg := Leg{A: Flow{Peer: netip.AddrPortFrom(fastpathtest.PeerA, 5000), Port: 28000}, B: Flow{Peer: netip.AddrPortFrom(fastpathtest.PeerB, 6000), Port: 28002},
		LocalA: fastpathtest.RelayA, LocalB: fastpathtest.RelayB}
	if err := tb.Apply(nil, []Leg{leg}); err != nil {
		t.Fatal(err)
	}
	// The same two peer sockets on another channel.
	other := leg
	other.A.Port, other.B.Port = 28004, 28006
	ok := leg
	ok.A.Port, ok.B.Port, ok.A.Peer = 28008, 28010, netip.AddrPortFrom(fastpathtest.PeerA, 5002)
	if err := tb.Apply(nil, []Leg{ok, other}); !errors.Is(err, ErrConflict) {
		t.Fatalf("conflicting leg: %v, want ErrConflict", err)
	}
	// Nothing of the failed call was installed; ok alone goes in.
	if err := tb.Apply(nil, []Leg{ok}); err != nil {
		t.Fatal(err)
	}
	v6 := leg
	v6.A.Peer = netip.MustParseAddrPort("[2001:db8::1]:5000")
	if err := tb.Apply(nil, []Leg{v6}); err == nil || !strings.Contains(err.Error(), "IPv4 only") {
		t.Fatalf("IPv6 leg: %v", err)
	}
	if err := tb.Apply([]Leg{other}, nil); err == nil {
		t.Fatal("removing a leg that is not installed succeeded")
	}
	if cs, err := tb.Counters(); err != nil || len(cs) != 4 {
		t.Fatalf("counters %v %v, want the 4 flows of two legs", cs, err)
	}
}

// TestStaleTableAndClose: a table left behind (a run that never closed)
// is replaced at the next Open; Close deletes it.
func TestStaleTableAndClose(t *testing.T) {
	tp := newTopo(t)
	var (
		stale   *Table
		openErr error
	)
	fastpathtest.In(t, tp.R, func() error { stale, openErr = Open(Config{}); return nil })
	if openErr != nil {
		t.Fatal(openErr)
	}
	if err := stale.Apply(nil, []Leg{{A: Flow{Peer: netip.AddrPortFrom(fastpathtest.PeerA, 5000), Port: 28000},
		B: Flow{Peer: netip.AddrPortFrom(fastpathtest.PeerB, 6000), Port: 28002}, LocalA: fastpathtest.RelayA, LocalB: fastpathtest.RelayB}}); err != nil {
		t.Fatal(err)
	}
	stale.conn.CloseLasting() // as if the process died: the table stays
	if l := tp.nftList(t, DefaultTable); !strings.Contains(l, "28002") {
		t.Fatalf("stale table:\n%s", l)
	}
	tb := tp.open(t, Config{})
	l := tp.nftList(t, DefaultTable)
	if l == "" || strings.Contains(l, "28002") || !strings.Contains(l, "chain pre") || !strings.Contains(l, "chain post") {
		t.Fatalf("after Open:\n%s", l)
	}
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	if l := tp.nftList(t, DefaultTable); l != "" {
		t.Fatalf("table after Close:\n%s", l)
	}
	if err := tb.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestUnavailable(t *testing.T) {
	tp := newTopo(t)
	tp.Forwarding(t, false)
	var err error
	fastpathtest.In(t, tp.R, func() error { _, err = Open(Config{}); return nil })
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.Reason != "ip_forward_off" {
		t.Fatalf("Open with forwarding off: %v", err)
	}
	if l := tp.nftList(t, DefaultTable); l != "" {
		t.Fatalf("table created although unavailable:\n%s", l)
	}
}
