//go:build !nofastpath

package nft

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The flowtable variant (Config.Flowtable). A leg is one conntrack entry
// with DNAT and SNAT, so the kernel's flowtable — software, or the
// switch's hardware on SoCs that have it — can take both directions past
// the whole netfilter path:
//
//	chain pre  (filter, prerouting, priority raw):
//	  the stateless path's tests (no checksum test: NAT handles a zero one)
//	  ip saddr . udp sport . udp dport in @fwd  →  ct zone set <Zone>
//	chain dnat (nat, prerouting, priority dstnat):
//	  ct zone <Zone>: dnat to the peer @fwd names
//	chain snat (nat, postrouting, priority srcnat):
//	  ct zone <Zone>: snat to the relay's address and port @src names
//	chain fwd  (filter, forward, priority filter):
//	  ct zone <Zone>: flow add @ft
//	flowtable ft (ingress, every interface that is up but loopback;
//	  counter, and offload when the hardware takes it)
//
// The zone keeps offloaded legs apart from relayd's own sockets: their
// datagrams (before a leg is offloaded, or any that fails the tests, such
// as an oversize one) get zone 0 entries, which never match the NAT
// chains. A leg's entry in the zone is made over ctnetlink when the leg
// is installed, with the NAT the chains would give its first datagram
// from A (createEntries), so that the first datagrams of both sides find
// it; the chains NAT the entries datagrams make when there is none (a
// leg whose peers send to other addresses of the relay, or one silent
// for longer than conntrack's UDP timeout). Removing a leg deletes its
// entries (ctnetlink), which also ends its flowtable flow. Counters come
// from the entries (conntrack accounting:
// Open turns net.netfilter.nf_conntrack_acct on when it is off, or fails
// with reason conntrack_acct_off when it cannot), read in dumps the
// kernel filters where it can (conntrack_filter_linux.go).

// flowtableName is the flowtable's name in relayd's table.
const flowtableName = "ft"

// flowState is the flowtable variant's part of a Table.
type flowState struct {
	ct       *conntrack
	zone     uint16
	hardware bool // the flowtable has flags offload
	devices  []string
	totals   map[Flow]Counter      // per flow, across the entries that held it
	lastByID map[flowEntry]Counter // what each entry had at the last read
	// noFT leaves the flowtable out: NAT only, for tests on kernels
	// without nf_flow_table.
	noFT bool
}

// flowEntry is one flow as one conntrack entry holds it.
type flowEntry struct {
	flow Flow
	id   uint32
}

// zoneIs matches datagrams whose conntrack entry is in zone.
func zoneIs(zone uint16) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyZONE, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint16(zone)},
	}
}

// zonePreRule puts the datagrams of offloaded flows into zone, before
// conntrack looks them up.
func zonePreRule(listen netip.Addr, fwd *nftables.Set, zone uint16) []expr.Any {
	e := append(forwardable(listen, false), flowKey()...)
	return append(e,
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: fwd.Name, SetID: fwd.ID},
		&expr.Immediate{Register: reg1, Data: binaryutil.NativeEndian.PutUint16(zone)},
		&expr.Ct{Key: expr.CtKeyZONE, Register: reg1, SourceRegister: true},
	)
}

// dnatRule gives a new entry of zone the peer latched on the other port.
func dnatRule(fwd *nftables.Set, zone uint16) []expr.Any {
	e := append(zoneIs(zone), flowKey()...)
	return append(e,
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: fwd.Name, SetID: fwd.ID},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, RegProtoMin: reg32_1, Specified: true},
	)
}

// snatRule gives a new entry of zone the relay's address and port facing
// the peer it now goes to.
func snatRule(src *nftables.Set, zone uint16) []expr.Any {
	e := append(zoneIs(zone), srcKeyLoads()...)
	return append(e,
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: src.Name, SetID: src.ID},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, RegProtoMin: reg32_1, Specified: true},
	)
}

// offloadRule hands a forwarded entry of zone to the flowtable (the
// kernel takes an entry once it is confirmed; the one Apply makes is
// from the start).
func offloadRule(zone uint16) []expr.Any {
	return append(zoneIs(zone), &expr.FlowOffload{Name: flowtableName})
}

// flowDevices are the interfaces the flowtable hooks: every one that is
// up, loopback excepted (nothing forwarded arrives there).
func flowDevices() ([]string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces for the flowtable: %w", err)
	}
	var names []string
	for _, i := range ifs {
		if i.Flags&net.FlagUp != 0 && i.Flags&net.FlagLoopback == 0 {
			names = append(names, i.Name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// createFlowtable builds the flowtable variant's table: with hardware
// offload first, and without when the kernel or the devices refuse it.
func (t *Table) createFlowtable(listen netip.Addr) error {
	fs := t.flow
	devs, err := flowDevices()
	if err != nil {
		return err
	}
	fs.devices = devs
	var errs []error
	for _, hw := range []bool{true, false} {
		if hw && fs.noFT {
			continue
		}
		if err := t.deleteStale(); err != nil {
			return err
		}
		if err := t.addSetsAndChains(listen, hw); err != nil {
			return err
		}
		err := t.conn.Flush()
		if err == nil {
			fs.hardware = hw
			return nil
		}
		errs = append(errs, err)
		if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EPERM) {
			break
		}
	}
	err = fmt.Errorf("create table %s with flowtable: %w", t.table.Name, errors.Join(errs...))
	if u := classify(err).(*UnavailableError); u.Reason != "no_cap_net_admin" {
		u.Reason = "no_flowtable"
		return u
	}
	return classify(err)
}

// addSetsAndChains queues the flowtable variant's table.
func (t *Table) addSetsAndChains(listen netip.Addr, hw bool) error {
	fs := t.flow
	t.conn.AddTable(t.table)
	if err := t.addSets(); err != nil {
		return err
	}
	if !fs.noFT {
		flags := nftables.FlowtableFlagsCounter
		if hw {
			flags |= nftables.FlowtableFlagsHWOffload
		}
		t.conn.AddFlowtable(&nftables.Flowtable{Table: t.table, Name: flowtableName, Devices: fs.devices, Flags: flags,
			Hooknum: nftables.FlowtableHookIngress, Priority: nftables.FlowtablePriorityFilter})
	}
	chain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority, e []expr.Any) {
		c := t.conn.AddChain(&nftables.Chain{Name: name, Table: t.table, Type: typ, Hooknum: hook, Priority: prio})
		t.conn.AddRule(&nftables.Rule{Table: t.table, Chain: c, Exprs: e})
	}
	chain("pre", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRaw, zonePreRule(listen, t.fwd, fs.zone))
	chain("dnat", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest, dnatRule(t.fwd, fs.zone))
	chain("snat", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource, snatRule(t.src, fs.zone))
	if !fs.noFT {
		chain("fwd", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter, offloadRule(fs.zone))
	}
	return nil
}

// refreshDevices adds interfaces that came up since the flowtable was
// made (a PPPoE session's new device); the kernel drops those that go.
func (t *Table) refreshDevices() error {
	fs := t.flow
	if fs.noFT {
		return nil
	}
	devs, err := flowDevices()
	if err != nil {
		return err
	}
	if slices.Equal(devs, fs.devices) {
		return nil
	}
	flags := nftables.FlowtableFlagsCounter
	if fs.hardware {
		flags |= nftables.FlowtableFlagsHWOffload
	}
	t.conn.AddFlowtable(&nftables.Flowtable{Table: t.table, Name: flowtableName, Devices: devs, Flags: flags,
		Hooknum: nftables.FlowtableHookIngress, Priority: nftables.FlowtablePriorityFilter})
	if err := t.conn.Flush(); err != nil {
		return fmt.Errorf("flowtable devices %v: %w", devs, err)
	}
	fs.devices = devs
	return nil
}

// entryTimeout is how long, in seconds, a leg's entry made at install
// waits for its first datagram; from then on conntrack's UDP timeouts
// (and the flowtable's) keep it.
const entryTimeout = 120

// createEntries makes the conntrack entry of each leg, as its first
// datagram from A through the DNAT and SNAT rules would: A's datagrams
// to the relay's port facing it go to B from the relay's port facing B,
// and B's back. Made before the leg's elements go in, it is there for
// the first datagram of either side. Were the entries left to the
// datagrams, the first one from each side, arriving in one batch (a
// network card's interrupt, or two CPUs at once), would each begin an
// entry of its own before either is confirmed: the second one's tuples
// are the first one's reversed, conntrack cannot insert it (counted as
// insert_failed and drop in /proc/net/stat/nf_conntrack) and drops its
// datagram.
//
// One entry serves both sides only when each peer sends to the relay's
// address facing it, the one the SNAT rule gives the other side's
// datagrams (LocalA, LocalB). A peer that sends to another of the relay's
// addresses makes an entry of its own, whose reply tuple would clash
// with the one made here: its every datagram would be dropped. So an
// entry is made only for a leg whose peers both sent to those addresses,
// which the conntrack entries of zone 0 (relayd's sockets, while the leg
// was relayed in userspace) show; another leg is left to the rules (its
// two sides make an entry each, which do not clash).
func (t *Table) createEntries(legs []Leg) error {
	for _, l := range legs {
		ok, err := t.sentToLocal(l)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		orig := ctTuple{Src: l.A.Peer, Dst: netip.AddrPortFrom(l.LocalA, l.A.Port)}
		if err := t.flow.ct.createNAT(t.flow.zone, orig, l.B.Peer, netip.AddrPortFrom(l.LocalB, l.B.Port), entryTimeout); err != nil {
			return err
		}
	}
	return nil
}

// sentToLocal reports whether both of l's peers sent to the relay's
// address facing them: each has the zone 0 entry its first datagram to
// relayd's socket made. (An entry relayd's own datagram to the peer made
// holds the same tuple as its reply, when the peer sent elsewhere.)
func (t *Table) sentToLocal(l Leg) (bool, error) {
	for _, side := range [2]ctTuple{
		{Src: l.A.Peer, Dst: netip.AddrPortFrom(l.LocalA, l.A.Port)},
		{Src: l.B.Peer, Dst: netip.AddrPortFrom(l.LocalB, l.B.Port)},
	} {
		e, ok, err := t.flow.ct.get(0, side)
		if err != nil || !ok || e.Orig != side {
			return false, err
		}
	}
	return true, nil
}

// removeEntries deletes the conntrack entries of legs, ending their
// flowtable flows: the next datagram takes the rules again. Each flow's
// tuple finds its entry whichever side sent first.
func (t *Table) removeEntries(legs []Leg) error {
	if len(legs) == 0 {
		return nil
	}
	gone := map[Flow]bool{}
	for _, l := range legs {
		gone[l.A], gone[l.B] = true, true
	}
	for f := range gone {
		delete(t.flow.totals, f)
	}
	for k := range t.flow.lastByID {
		if gone[k.flow] {
			delete(t.flow.lastByID, k)
		}
	}
	// The relay's address a peer sent to is not part of the leg (listen
	// may be unspecified), so the zone's entries are matched by their
	// flows rather than looked up by tuple.
	entries, err := t.flow.ct.dump(ctQuery{zone: t.flow.zone})
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if of, rf := entryFlows(e); gone[of] || gone[rf] {
			if err := t.flow.ct.remove(t.flow.zone, e.Orig); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// entryFlows are the two flows an entry holds: its original direction
// (the peer that sent first, to the relay's port) and its reply (the
// other peer, to the relay's port that SNAT gave).
func entryFlows(e ctEntry) (orig, reply Flow) {
	return Flow{Peer: e.Orig.Src, Port: e.Orig.Dst.Port()}, Flow{Peer: e.Reply.Src, Port: e.Reply.Dst.Port()}
}

// flowCounters reads the zone's entries and returns each installed
// flow's total. An entry that ended (idle for longer than conntrack's UDP
// timeout, then a new one) starts its counters at 0 again; the totals
// carry on across entries, so they only grow, as the stateless
// path's element counters do.
func (t *Table) flowCounters() (map[Flow]Counter, error) {
	fs := t.flow
	// NATed entries only: one the rules left without NAT delivers its
	// datagrams to relayd's socket, which counts them itself.
	entries, err := fs.ct.dump(ctQuery{zone: fs.zone, nated: true})
	if err != nil {
		return nil, err
	}
	seen := map[flowEntry]Counter{}
	for _, e := range entries {
		of, rf := entryFlows(e)
		for _, fc := range [2]struct {
			f Flow
			c Counter
		}{{of, e.OrigCount}, {rf, e.ReplyCount}} {
			if !t.fwdKeys[fc.f] {
				continue
			}
			k := flowEntry{fc.f, e.ID}
			prev := fs.lastByID[k]
			tot := fs.totals[fc.f]
			if fc.c.Packets >= prev.Packets && fc.c.Bytes >= prev.Bytes {
				tot.Packets += fc.c.Packets - prev.Packets
				tot.Bytes += fc.c.Bytes - prev.Bytes
			}
			fs.totals[fc.f] = tot
			seen[k] = fc.c
		}
	}
	fs.lastByID = seen
	out := make(map[Flow]Counter, len(fs.totals))
	for f, c := range fs.totals {
		if !t.fwdKeys[f] {
			continue
		}
		// Conntrack counts whole IP packets, like the element counters.
		if c.Bytes >= headerBytes*c.Packets {
			c.Bytes -= headerBytes * c.Packets
		} else {
			c.Bytes = 0
		}
		out[f] = c
	}
	return out, nil
}

// flushZone deletes every entry of the zone: those of a crashed run at
// Open, every leg's at Close.
func (t *Table) flushZone() error {
	entries, err := t.flow.ct.dump(ctQuery{zone: t.flow.zone})
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if err := t.flow.ct.remove(t.flow.zone, e.Orig); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
