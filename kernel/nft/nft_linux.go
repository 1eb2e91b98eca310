//go:build !nofastpath

package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Registers as the kernel numbers them: NFT_REG_1 is the first 16-byte
// register and the same storage as the 32-bit NFT_REG32_00; a concatenated
// key is loaded into consecutive 32-bit registers, one per field.
const (
	reg1    = unix.NFT_REG_1
	reg32_1 = unix.NFT_REG32_01
	reg32_2 = unix.NFT_REG32_02
	reg32_3 = unix.NFT_REG32_03
)

// Offsets in the IPv4 and UDP headers.
const (
	ipVerIHL   = 0
	ipFragOff  = 6
	ipCsum     = 10
	ipSaddr    = 12
	ipDaddr    = 16
	udpSport   = 0
	udpDport   = 2
	udpLength  = 4
	udpCsum    = 6
	rtnLocal   = 2 // RTN_LOCAL: fib's address type for the host's own addresses
	ctStateUnt = 0x40
)

// Table is the fast path's nftables table. Its methods are safe for
// concurrent use; each is one netlink round trip (or one dump).
type Table struct {
	mu    sync.Mutex
	conn  *nftables.Conn
	table *nftables.Table
	fwd   *nftables.Set // flow -> peer to forward to; counters per element
	src   *nftables.Set // (to peer, from peer) -> relay address and port
	// Keys in use, to refuse a conflicting leg before the kernel rejects
	// the whole batch it is in.
	fwdKeys map[Flow]bool
	srcKeys map[[16]byte]bool
	closed  bool
	// flow is the flowtable variant's state; nil for the stateless path.
	flow *flowState
}

// Open creates the table, replacing one of the same name left by an
// earlier run, in the network namespace of the calling thread. It returns
// an *UnavailableError when the host cannot run the fast path.
func Open(cfg Config) (*Table, error) {
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.Listen.IsValid() && !cfg.Listen.Unmap().Is4() {
		return nil, &UnavailableError{Reason: "ipv6_listen", Err: fmt.Errorf("listen address %s: the fast path handles IPv4 only", cfg.Listen)}
	}
	if err := CheckForwarding(); err != nil {
		return nil, err
	}
	if !cfg.ignoreBrNetfilter {
		if err := CheckBrNetfilter(); err != nil {
			return nil, err
		}
	}
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, classify(fmt.Errorf("open nftables netlink socket: %w", err))
	}
	t := &Table{conn: conn, fwdKeys: map[Flow]bool{}, srcKeys: map[[16]byte]bool{}}
	t.table = &nftables.Table{Name: cfg.Table, Family: nftables.TableFamilyIPv4}
	if !cfg.Flowtable {
		if err := t.create(cfg.Listen); err != nil {
			conn.CloseLasting()
			return nil, err
		}
		return t, nil
	}
	if err := t.openFlowtable(cfg); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// openFlowtable creates the flowtable variant's table, then turns on
// conntrack accounting (its sysctl exists once the table made the kernel
// load conntrack) and deletes the zone's entries a crashed run left.
func (t *Table) openFlowtable(cfg Config) error {
	if cfg.Zone == 0 {
		cfg.Zone = DefaultZone
	}
	t.flow = &flowState{zone: cfg.Zone, noFT: cfg.noFlowtable, totals: map[Flow]Counter{}, lastByID: map[flowEntry]Counter{}}
	if err := t.createFlowtable(cfg.Listen); err != nil {
		return err
	}
	if err := ensureAccounting(); err != nil {
		return err
	}
	ct, err := openConntrack()
	if err != nil {
		return classify(err)
	}
	t.flow.ct = ct
	if err := t.flushZone(); err != nil {
		// The first ctnetlink request: a kernel without
		// nf_conntrack_netlink (a separate package on OpenWrt) fails it.
		return &UnavailableError{Reason: "no_ctnetlink", Err: fmt.Errorf("delete stale conntrack entries of zone %d: %w", cfg.Zone, err)}
	}
	return nil
}

// classify turns a netlink failure at start into the reason an operator
// can act on.
func classify(err error) error {
	switch {
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return &UnavailableError{Reason: "no_cap_net_admin", Err: err}
	case errors.Is(err, syscall.EPROTONOSUPPORT), errors.Is(err, syscall.EAFNOSUPPORT), errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.ENOENT):
		return &UnavailableError{Reason: "no_nf_tables", Err: err}
	case errors.Is(err, syscall.EBUSY):
		return &UnavailableError{Reason: "table_busy", Err: err}
	}
	return &UnavailableError{Reason: "nftables_error", Err: err}
}

// create deletes a stale table and builds the sets and chains in one
// transaction each.
func (t *Table) create(listen netip.Addr) error {
	// A table left by a crashed run (SIGKILL, power cut on a host whose
	// rules survive, a test) would keep forwarding to peers nobody
	// latches any more. Deleting a table that does not exist fails with
	// ENOENT, which is the normal case.
	if err := t.deleteStale(); err != nil {
		return err
	}
	t.conn.AddTable(t.table)
	if err := t.addSets(); err != nil {
		return err
	}
	pre := t.conn.AddChain(&nftables.Chain{Name: "pre", Table: t.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})
	post := t.conn.AddChain(&nftables.Chain{Name: "post", Table: t.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	t.conn.AddRule(&nftables.Rule{Table: t.table, Chain: pre, Exprs: preRule(listen, t.fwd)})
	t.conn.AddRule(&nftables.Rule{Table: t.table, Chain: post, Exprs: postRule(t.src)})
	if err := t.conn.Flush(); err != nil {
		return classify(fmt.Errorf("create table %s: %w", t.table.Name, err))
	}
	return nil
}

// deleteStale deletes a table of the same name.
func (t *Table) deleteStale() error {
	// A table left by a crashed run (SIGKILL, power cut on a host whose
	// rules survive, a test) would keep forwarding to peers nobody
	// latches any more. Deleting a table that does not exist fails with
	// ENOENT, which is the normal case.
	t.conn.DelTable(t.table)
	if err := t.conn.Flush(); err != nil && !errors.Is(err, syscall.ENOENT) {
		return classify(fmt.Errorf("delete stale table %s: %w", t.table.Name, err))
	}
	return nil
}

// addSets queues the two maps. The stateless path counts per element;
// the flowtable variant's counters are conntrack's.
func (t *Table) addSets() error {
	t.fwd = &nftables.Set{Table: t.table, Name: "fwd", IsMap: true, Concatenation: true, Counter: t.flow == nil,
		KeyType:  nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService, nftables.TypeInetService),
		DataType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
	t.src = &nftables.Set{Table: t.table, Name: "src", IsMap: true, Concatenation: true,
		KeyType:  nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService, nftables.TypeIPAddr, nftables.TypeInetService),
		DataType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
	for _, s := range []*nftables.Set{t.fwd, t.src} {
		if err := t.conn.AddSet(s, nil); err != nil {
			return fmt.Errorf("nftables set %s: %w", s.Name, err)
		}
	}
	return nil
}

// preRule forwards a datagram of an offloaded flow to the peer latched on
// the other port of its leg. Every test before the lookup sends what the
// rules cannot handle exactly like userspace to userspace.
func preRule(listen netip.Addr, fwd *nftables.Set) []expr.Any {
	return append(forwardable(listen, true), keyLookup(fwd)...)
}

// forwardable are the tests a datagram must pass to be forwarded by the
// kernel; withCsum also sends a datagram without a UDP checksum to the
// socket.
func forwardable(listen netip.Addr, withCsum bool) []expr.Any {
	e := []expr.Any{
		// IPv4 with a 20-byte header: the byte counter and the offsets
		// below are exact, and IP options stay with the normal stack.
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ipVerIHL, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0x45}},
		// Not a fragment (MF clear, offset 0): userspace reassembles.
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ipFragOff, Len: 2},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 2, Mask: []byte{0x3f, 0xff}, Xor: []byte{0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0, 0}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_UDP}},
	}
	if listen.IsValid() && !listen.IsUnspecified() {
		a := listen.Unmap().As4()
		e = append(e,
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ipDaddr, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: a[:]})
	} else {
		// Bound to every address: match any of the host's own, never a
		// datagram routed through this host to someone else's port.
		e = append(e,
			&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(rtnLocal)})
	}
	e = append(e,
		// Oversize datagrams go to the socket, which drops and counts them.
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: udpLength, Len: 2},
		&expr.Cmp{Op: expr.CmpOpLte, Register: reg1, Data: binaryutil.BigEndian.PutUint16(MaxPayload + 8)})
	if withCsum {
		// A datagram without a UDP checksum (0, allowed over IPv4) goes to
		// the socket too: nftables' checksum update fails on it and the
		// half-rewritten datagram would be lost (the conformance test's
		// finding). Conntrack NAT handles it, so the flowtable variant
		// forwards it.
		e = append(e,
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: udpCsum, Len: 2},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{0, 0}})
	}
	return e
}

// keyLookup looks the datagram's flow (ip saddr . udp sport . udp dport)
// up in fwd and rewrites it to the peer latched on the other port.
func keyLookup(fwd *nftables.Set) []expr.Any {
	return append(flowKey(), []expr.Any{
		// No element: the rule ends here and the datagram goes on untouched.
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: fwd.Name, SetID: fwd.ID},
		// Only now, for datagrams we rewrite: conntrack must not track a
		// flow whose addresses change under it.
		&expr.Notrack{},
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: reg1, Base: expr.PayloadBaseNetworkHeader,
			Offset: ipDaddr, Len: 4, CsumType: expr.CsumTypeInet, CsumOffset: ipCsum, CsumFlags: unix.NFT_PAYLOAD_L4CSUM_PSEUDOHDR},
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: reg32_1, Base: expr.PayloadBaseTransportHeader,
			Offset: udpDport, Len: 2, CsumType: expr.CsumTypeInet, CsumOffset: udpCsum},
	}...)
}

// flowKey loads the key of @fwd: ip saddr . udp sport . udp dport.
func flowKey() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ipSaddr, Len: 4},
		&expr.Payload{DestRegister: reg32_1, Base: expr.PayloadBaseTransportHeader, Offset: udpSport, Len: 2},
		&expr.Payload{DestRegister: reg32_2, Base: expr.PayloadBaseTransportHeader, Offset: udpDport, Len: 2},
	}
}

// srcKeyLoads loads the key of @src: ip daddr . udp dport . ip saddr .
// udp sport.
func srcKeyLoads() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ipDaddr, Len: 4},
		&expr.Payload{DestRegister: reg32_1, Base: expr.PayloadBaseTransportHeader, Offset: udpDport, Len: 2},
		&expr.Payload{DestRegister: reg32_2, Base: expr.PayloadBaseNetworkHeader, Offset: ipSaddr, Len: 4},
		&expr.Payload{DestRegister: reg32_3, Base: expr.PayloadBaseTransportHeader, Offset: udpSport, Len: 2},
	}
}

// postRule gives a datagram rewritten by preRule the relay's address and
// port as its source.
func postRule(src *nftables.Set) []expr.Any {
	e := []expr.Any{
		// Only untracked datagrams can be ours: the relay's own sockets'
		// traffic (tracked when conntrack runs) skips the lookup.
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ctStateUnt), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{0, 0, 0, 0}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_UDP}},
	}
	e = append(e, srcKeyLoads()...)
	return append(e,
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: src.Name, SetID: src.ID},
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: reg1, Base: expr.PayloadBaseNetworkHeader,
			Offset: ipSaddr, Len: 4, CsumType: expr.CsumTypeInet, CsumOffset: ipCsum, CsumFlags: unix.NFT_PAYLOAD_L4CSUM_PSEUDOHDR},
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: reg32_1, Base: expr.PayloadBaseTransportHeader,
			Offset: udpSport, Len: 2, CsumType: expr.CsumTypeInet, CsumOffset: udpCsum},
	)
}

// Element encodings: every field of a concatenation is padded to 4 bytes,
// in network byte order, as the payload loads put them in registers.

func fwdKey(f Flow) []byte {
	b := make([]byte, 12)
	a := f.Peer.Addr().Unmap().As4()
	copy(b, a[:])
	binary.BigEndian.PutUint16(b[4:], f.Peer.Port())
	binary.BigEndian.PutUint16(b[8:], f.Port)
	return b
}

func addrPortVal(addr netip.Addr, port uint16) []byte {
	b := make([]byte, 8)
	a := addr.Unmap().As4()
	copy(b, a[:])
	binary.BigEndian.PutUint16(b[4:], port)
	return b
}

// srcKey is the key of datagrams to peer `to` rewritten from peer `from`.
func srcKey(to, from netip.AddrPort) [16]byte {
	var b [16]byte
	ta, fa := to.Addr().Unmap().As4(), from.Addr().Unmap().As4()
	copy(b[0:], ta[:])
	binary.BigEndian.PutUint16(b[4:], to.Port())
	copy(b[8:], fa[:])
	binary.BigEndian.PutUint16(b[12:], from.Port())
	return b
}

// elements are the four map elements of a leg.
func (l Leg) elements() (fwd, src []nftables.SetElement) {
	ka, kb := srcKey(l.B.Peer, l.A.Peer), srcKey(l.A.Peer, l.B.Peer)
	fwd = []nftables.SetElement{
		{Key: fwdKey(l.A), Val: addrPortVal(l.B.Peer.Addr(), l.B.Peer.Port())},
		{Key: fwdKey(l.B), Val: addrPortVal(l.A.Peer.Addr(), l.A.Peer.Port())},
	}
	src = []nftables.SetElement{
		{Key: ka[:], Val: addrPortVal(l.LocalB, l.B.Port)},
		{Key: kb[:], Val: addrPortVal(l.LocalA, l.A.Port)},
	}
	return fwd, src
}

// Apply removes the legs in remove and installs those in add, in one
// transaction: the kernel switches from the old to the new rules between
// two datagrams. Keep calls to a few hundred legs: the transaction is
// one netlink message batch and must fit the socket buffer (about 2,000
// legs fail with EMSGSIZE). A leg of add that conflicts with an installed one fails
// the call with ErrConflict before anything changes. Removing a leg that
// is not installed is an error from the kernel (ENOENT).
func (t *Table) Apply(remove, add []Leg) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("nftables fast path is closed")
	}
	// The key sets change only once the kernel accepted the transaction;
	// until then this call's removals and additions are kept aside (a
	// copy of the sets would cost O(installed legs) per call).
	delF, delS := map[Flow]bool{}, map[[16]byte]bool{}
	addF, addS := map[Flow]bool{}, map[[16]byte]bool{}
	usedF := func(f Flow) bool { return (t.fwdKeys[f] && !delF[f]) || addF[f] }
	usedS := func(k [16]byte) bool { return (t.srcKeys[k] && !delS[k]) || addS[k] }
	var delFwd, delSrc, addFwd, addSrc []nftables.SetElement
	for _, l := range remove {
		f, s := l.elements()
		delFwd, delSrc = append(delFwd, f...), append(delSrc, s...)
		delF[l.A], delF[l.B] = true, true
		delS[srcKey(l.B.Peer, l.A.Peer)], delS[srcKey(l.A.Peer, l.B.Peer)] = true, true
	}
	for _, l := range add {
		if err := l.Valid(); err != nil {
			return err
		}
		ka, kb := srcKey(l.B.Peer, l.A.Peer), srcKey(l.A.Peer, l.B.Peer)
		if usedF(l.A) || usedF(l.B) || usedS(ka) || usedS(kb) || ka == kb {
			return fmt.Errorf("leg %s->%d / %s->%d: %w", l.A.Peer, l.A.Port, l.B.Peer, l.B.Port, ErrConflict)
		}
		addF[l.A], addF[l.B], addS[ka], addS[kb] = true, true, true, true
		f, s := l.elements()
		addFwd, addSrc = append(addFwd, f...), append(addSrc, s...)
	}
	// The flowtable variant's entries: a new leg's before its elements,
	// so that its first datagrams find it (createEntries says why); a
	// leg that replaces one reuses the old one's flows, whose entries go
	// after the transaction, so its own come after that.
	var fresh, replacing []Leg
	if t.flow != nil {
		for _, l := range add {
			if delF[l.A] || delF[l.B] {
				replacing = append(replacing, l)
			} else {
				fresh = append(fresh, l)
			}
		}
		if err := t.createEntries(fresh); err != nil {
			return errors.Join(err, t.removeEntries(fresh))
		}
	}
	// Deletions first: a leg replaced in the same call reuses its keys.
	for _, op := range []struct {
		del  bool
		set  *nftables.Set
		elts []nftables.SetElement
	}{{true, t.fwd, delFwd}, {true, t.src, delSrc}, {false, t.src, addSrc}, {false, t.fwd, addFwd}} {
		if len(op.elts) == 0 {
			continue
		}
		var err error
		if op.del {
			err = t.conn.SetDeleteElements(op.set, op.elts)
		} else {
			err = t.conn.SetAddElements(op.set, op.elts)
		}
		if err != nil {
			return fmt.Errorf("nftables elements of %s: %w", op.set.Name, err)
		}
	}
	if err := t.conn.Flush(); err != nil {
		err = fmt.Errorf("nftables transaction (%d legs removed, %d added): %w", len(remove), len(add), err)
		if t.flow != nil {
			err = errors.Join(err, t.removeEntries(fresh))
		}
		return err
	}
	for k := range delF {
		delete(t.fwdKeys, k)
	}
	for k := range delS {
		delete(t.srcKeys, k)
	}
	for k := range addF {
		t.fwdKeys[k] = true
	}
	for k := range addS {
		t.srcKeys[k] = true
	}
	if t.flow != nil {
		// After the transaction: a datagram between the two takes the
		// old entry, as it would take the old element.
		if err := t.removeEntries(remove); err != nil {
			return fmt.Errorf("end the conntrack entries of %d removed legs: %w", len(remove), err)
		}
		if err := t.createEntries(replacing); err != nil {
			return err
		}
	}
	return nil
}

// Counters returns what the kernel forwarded for every installed flow,
// from one dump of the forwarding map.
func (t *Table) Counters() (map[Flow]Counter, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errors.New("nftables fast path is closed")
	}
	if t.flow != nil {
		if err := t.refreshDevices(); err != nil {
			return nil, err
		}
		return t.flowCounters()
	}
	elems, err := t.conn.GetSetElements(t.fwd)
	if err != nil {
		return nil, fmt.Errorf("read nftables counters: %w", err)
	}
	out := make(map[Flow]Counter, len(elems))
	for _, e := range elems {
		if len(e.Key) != 12 || e.Counter == nil {
			continue
		}
		f := Flow{Peer: netip.AddrPortFrom(netip.AddrFrom4([4]byte(e.Key[0:4])), binary.BigEndian.Uint16(e.Key[4:])),
			Port: binary.BigEndian.Uint16(e.Key[8:])}
		c := Counter{Packets: e.Counter.Packets}
		if e.Counter.Bytes >= headerBytes*e.Counter.Packets {
			c.Bytes = e.Counter.Bytes - headerBytes*e.Counter.Packets
		}
		out[f] = c
	}
	return out, nil
}

// Close deletes the table (every offloaded flow returns to userspace, or
// to nothing once the sockets are gone) and releases the netlink socket.
// It is idempotent.
func (t *Table) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	t.conn.DelTable(t.table)
	err := t.conn.Flush()
	if t.flow != nil && t.flow.ct != nil {
		// Without the table the zone's entries forward nothing, but
		// their NAT would hold a leg's datagrams until they time out.
		err = errors.Join(err, t.flushZone(), t.flow.ct.close())
	}
	if cerr := t.conn.CloseLasting(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("delete nftables table %s: %w", t.table.Name, err)
	}
	return nil
}

// Name names the table for logs.
func (t *Table) Name() string {
	switch {
	case t.flow == nil:
		return "nftables table " + t.table.Name
	case t.flow.noFT:
		return "nftables table " + t.table.Name + " (conntrack NAT, no flowtable)"
	case t.flow.hardware:
		return "nftables flowtable " + t.table.Name + " (hardware offload)"
	}
	return "nftables flowtable " + t.table.Name + " (software)"
}
