//go:build !nofastpath

package nft

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel/internal/fastpathtest"
)

// The flowtable variant's rules: every datagram of an offloaded flow goes
// into the zone, only the zone's new entries are NATed (relayd's own
// sockets' entries, in zone 0, never), and only the zone's flows go to the
// flowtable.
func TestFlowtableRules(t *testing.T) {
	fwd := &nftables.Set{Name: "fwd", ID: 1}
	src := &nftables.Set{Name: "src", ID: 2}
	const zone = 4242
	zoneData := binaryutil.NativeEndian.PutUint16(zone)

	pre := zonePreRule(netip.IPv4Unspecified(), fwd, zone)
	last := pre[len(pre)-1].(*expr.Ct)
	if last.Key != expr.CtKeyZONE || !last.SourceRegister {
		t.Errorf("pre rule ends with %+v, want ct zone set", last)
	}
	if imm := pre[len(pre)-2].(*expr.Immediate); string(imm.Data) != string(zoneData) {
		t.Errorf("pre rule sets zone %v, want %v", imm.Data, zoneData)
	}
	for _, e := range pre {
		if p, ok := e.(*expr.Payload); ok && p.Offset == udpCsum && p.Base == expr.PayloadBaseTransportHeader {
			t.Error("pre rule tests the UDP checksum: conntrack NAT forwards datagrams without one")
		}
		if _, ok := e.(*expr.Notrack); ok {
			t.Error("pre rule has notrack: the flowtable takes tracked flows only")
		}
	}

	for name, rule := range map[string][]expr.Any{"dnat": dnatRule(fwd, zone), "snat": snatRule(src, zone), "fwd": offloadRule(zone)} {
		ct, ok := rule[0].(*expr.Ct)
		cmp, ok2 := rule[1].(*expr.Cmp)
		if !ok || !ok2 || ct.Key != expr.CtKeyZONE || ct.SourceRegister || cmp.Op != expr.CmpOpEq || string(cmp.Data) != string(zoneData) {
			t.Errorf("%s rule does not start with ct zone %d: %+v %+v", name, zone, rule[0], rule[1])
		}
	}
	for name, c := range map[string]struct {
		rule []expr.Any
		typ  expr.NATType
		set  string
	}{"dnat": {dnatRule(fwd, zone), expr.NATTypeDestNAT, "fwd"}, "snat": {snatRule(src, zone), expr.NATTypeSourceNAT, "src"}} {
		nat := c.rule[len(c.rule)-1].(*expr.NAT)
		lookup := c.rule[len(c.rule)-2].(*expr.Lookup)
		if nat.Type != c.typ || nat.Family != unix.NFPROTO_IPV4 || nat.RegAddrMin != reg1 || nat.RegProtoMin != reg32_1 {
			t.Errorf("%s: %+v, want address from register 1 and port from the next 32-bit one", name, nat)
		}
		if lookup.SetName != c.set || !lookup.IsDestRegSet || lookup.DestRegister != reg1 {
			t.Errorf("%s: lookup %+v, want @%s into register 1", name, lookup, c.set)
		}
	}
	off := offloadRule(zone)
	if fo, ok := off[len(off)-1].(*expr.FlowOffload); !ok || fo.Name != flowtableName {
		t.Errorf("fwd rule ends with %+v, want flow add @%s", off[len(off)-1], flowtableName)
	}
}

// entryFlows: an entry made by A's datagram holds A's flow in its
// original direction and B's (to the relay port SNAT chose) in its reply.
func TestEntryFlows(t *testing.T) {
	a, b := netip.MustParseAddrPort("198.51.100.1:5000"), netip.MustParseAddrPort("203.0.113.2:6000")
	e := ctEntry{Orig: ctTuple{Src: a, Dst: netip.MustParseAddrPort("192.0.2.1:40000")},
		Reply: ctTuple{Src: b, Dst: netip.MustParseAddrPort("192.0.2.1:40002")}}
	o, r := entryFlows(e)
	if o != (Flow{Peer: a, Port: 40000}) || r != (Flow{Peer: b, Port: 40002}) {
		t.Errorf("flows %v %v", o, r)
	}
}

// On a kernel without nf_flow_table (this one's), the flowtable variant
// is unavailable with its own reason, so auto can fall back.
func TestFlowtableUnavailableReason(t *testing.T) {
	tp := newTopo(t)
	var (
		tb  *Table
		err error
	)
	fastpathtest.In(t, tp.R, func() error { tb, err = Open(Config{Flowtable: true}); return nil })
	if err == nil {
		tb.Close()
		t.Skip("this kernel has nf_flow_table: the arm64 image test covers it")
	}
	var u *UnavailableError
	if !errors.As(err, &u) {
		t.Fatalf("Open: %v, want an UnavailableError", err)
	}
	if u.Reason != "no_flowtable" {
		t.Errorf("reason %q (%v), want no_flowtable", u.Reason, err)
	}
}
