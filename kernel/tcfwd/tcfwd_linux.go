// Package tcfwd is the eBPF fast path: a TC program on the ingress of the
// host's Ethernet interfaces (and, in a variant for packets without an
// Ethernet header, of its PPP, WireGuard and tun ones) rewrites a latched
// flow's datagrams to the other peer of its leg (addresses, ports,
// checksums, MAC addresses from the kernel's routing and neighbour
// tables) and redirects them to the egress of the output device, so they
// never reach the stack's socket layer nor relayd. It implements the same legs and counters as
// kernel/nft (whose Leg, Flow and Counter it shares), with less CPU per
// datagram than it (docs/performance.md).
//
// The program is assembled by hand (kernel/internal/ebpf), so the
// package links no eBPF library and builds for every board. It needs
// CAP_BPF and CAP_NET_ADMIN (or CAP_SYS_ADMIN), Linux ≥ 5.10 for the
// helpers it calls, and net.ipv4.ip_forward=1 (bpf_fib_lookup's
// condition). On Linux ≥ 6.6 the program is attached with TCX links,
// which the kernel removes when relayd exits for any reason; older
// kernels get a clsact qdisc filter, which Open replaces and Close removes.
package tcfwd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel"
	"github.com/jnrelay/jnrelay/kernel/internal/ebpf"
	"github.com/jnrelay/jnrelay/kernel/nft"
)

// maxPayload is the largest UDP payload the program forwards
// (kernel.MaxDatagram, as the nftables path and userspace): larger
// datagrams go to relayd's socket, which drops and counts them.
const maxPayload = kernel.MaxDatagram

// Attach selects how the program is attached to interfaces.
type Attach string

const (
	// AttachAuto uses TCX links where the kernel has them (6.6), else a
	// clsact filter.
	AttachAuto Attach = ""
	// AttachTCX requires TCX links.
	AttachTCX Attach = "tcx"
	// AttachClsact requires a clsact qdisc filter (the pre-6.6 way).
	AttachClsact Attach = "clsact"
)

// Config configures Open.
type Config struct {
	// Listen is the address relay ports are bound to: a specific IPv4
	// address is matched as the destination, an unspecified one matches
	// any of the host's own IPv4 addresses.
	Listen netip.Addr
	// MaxFlows bounds the flow map: two flows per offloaded leg.
	MaxFlows int
	// Attach selects the attachment; empty = AttachAuto.
	Attach Attach
}

// Forwarder is the loaded program, its maps and its attachments. Its
// methods are safe for concurrent use.
type Forwarder struct {
	mu     sync.Mutex
	cfg    Config
	prog   int // for Ethernet devices
	progL3 int // for L3 devices (PPP, WireGuard, tun): no Ethernet header
	flows  int // flow key -> entry (valueSize)
	locals int // the host's IPv4 addresses (unspecified listen only)
	devs   int // ifindex -> devEthernet or devL3: the devices the program may redirect to
	// Attachments by ifindex: a TCX link descriptor, or -1 for a clsact
	// filter.
	attached map[int]int
	tcx      bool
	locAddrs map[[4]byte]bool
	keys     map[nft.Flow]bool // installed flows
	closed   bool
	// Batch buffers of Counters, kept between calls.
	bKeys, bVals []byte
}

// clsactPriority and clsactHandle name the filter of older kernels, so a
// new run finds and replaces the one a crashed run left.
const (
	clsactPriority = 0x4a4e // "JN"
	clsactHandle   = 1
)

// Open loads the program and attaches it to every Ethernet and L3
// interface of the calling thread's network namespace. It returns an
// *nft.UnavailableError when the host cannot run it.
func Open(cfg Config) (*Forwarder, error) {
	if cfg.Listen.IsValid() && !cfg.Listen.Unmap().Is4() {
		return nil, &nft.UnavailableError{Reason: "ipv6_listen", Err: fmt.Errorf("listen address %s: the fast path handles IPv4 only", cfg.Listen)}
	}
	cfg.Listen = cfg.Listen.Unmap()
	if cfg.MaxFlows < 2 {
		cfg.MaxFlows = 2
	}
	if err := nft.CheckForwarding(); err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge maps to RLIMIT_MEMLOCK; later ones to
	// the cgroup, and this is harmless there.
	_ = unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY})
	f := &Forwarder{cfg: cfg, prog: -1, progL3: -1, flows: -1, locals: -1, devs: -1, attached: map[int]int{},
		locAddrs: map[[4]byte]bool{}, keys: map[nft.Flow]bool{}}
	var err error
	// Entries are allocated as flows are installed: a router must not
	// pay for 40,000 flows it may never have.
	if f.flows, err = ebpf.MapCreate(unix.BPF_MAP_TYPE_HASH, keySize, valueSize, cfg.MaxFlows, unix.BPF_F_NO_PREALLOC); err != nil {
		return nil, classify("create the flow map", err)
	}
	if f.locals, err = ebpf.MapCreate(unix.BPF_MAP_TYPE_HASH, 4, 4, 256, unix.BPF_F_NO_PREALLOC); err != nil {
		f.closeFDs()
		return nil, classify("create the address map", err)
	}
	if f.devs, err = ebpf.MapCreate(unix.BPF_MAP_TYPE_HASH, 4, 4, 256, unix.BPF_F_NO_PREALLOC); err != nil {
		f.closeFDs()
		return nil, classify("create the device map", err)
	}
	if f.prog, err = ebpf.ProgLoad(unix.BPF_PROG_TYPE_SCHED_CLS, 0, "jnrelay_fwd", program(cfg.Listen, false, f.flows, f.locals, f.devs)); err != nil {
		f.closeFDs()
		return nil, classify("load the program", err)
	}
	if f.progL3, err = ebpf.ProgLoad(unix.BPF_PROG_TYPE_SCHED_CLS, 0, "jnrelay_fwd", program(cfg.Listen, true, f.flows, f.locals, f.devs)); err != nil {
		f.closeFDs()
		return nil, classify("load the program for L3 devices", err)
	}
	switch cfg.Attach {
	case AttachAuto:
		f.tcx = tcxAvailable(f.prog)
	case AttachTCX:
		if !tcxAvailable(f.prog) {
			f.closeFDs()
			return nil, &nft.UnavailableError{Reason: "no_tcx", Err: errors.New("this kernel has no TCX links (Linux ≥ 6.6)")}
		}
		f.tcx = true
	case AttachClsact:
	default:
		f.closeFDs()
		return nil, fmt.Errorf("tcfwd: attach %q: want tcx or clsact", cfg.Attach)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return nil, err
	}
	if len(f.attached) == 0 {
		_ = f.Close()
		return nil, &nft.UnavailableError{Reason: "no_ethernet", Err: errors.New("no Ethernet or L3 interface to attach the program to")}
	}
	return f, nil
}

// tcxAvailable tells TCX links from their absence by trying one on the
// loopback device (which the program is never left on).
func tcxAvailable(prog int) bool {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return false
	}
	l, err := ebpf.LinkCreate(prog, lo.Index, unix.BPF_TCX_INGRESS, 0)
	if err != nil {
		return false
	}
	_ = unix.Close(l)
	return true
}

// classify turns a bpf(2) failure at start into the reason an operator
// can act on.
func classify(what string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return &nft.UnavailableError{Reason: "no_cap_bpf", Err: fmt.Errorf("%s: %w (needs CAP_BPF and CAP_NET_ADMIN)", what, err)}
	case errors.Is(err, unix.ENOSYS):
		return &nft.UnavailableError{Reason: "no_bpf", Err: fmt.Errorf("%s: %w", what, err)}
	case errors.Is(err, unix.EINVAL):
		// An old kernel rejects a helper or map flag it does not know.
		return &nft.UnavailableError{Reason: "kernel_too_old", Err: fmt.Errorf("%s: %w", what, err)}
	}
	return &nft.UnavailableError{Reason: "bpf_error", Err: fmt.Errorf("%s: %w", what, err)}
}

// Sync attaches the programs to Ethernet and L3 interfaces that appeared
// since the last call, forgets those that went, and refreshes the host's
// addresses (for an unspecified listen address). Counters calls it, so
// hot-plugged interfaces and new addresses are served within a poll.
func (f *Forwarder) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errors.New("ebpf fast path is closed")
	}
	return f.syncLocked()
}

func (f *Forwarder) syncLocked() error {
	// The standard library's interface list: the netlink library's link
	// parsers would cost small boards a quarter of a MiB of flash.
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	seen := map[int]bool{}
	var errs []error
	for _, ifc := range ifs {
		kind := devEthernet
		switch {
		case isEthernet(ifc):
		case isL3(ifc):
			kind = devL3
		default:
			continue // loopback, and headers the program does not parse
		}
		seen[ifc.Index] = true
		if _, ok := f.attached[ifc.Index]; ok {
			continue
		}
		if err := f.attach(ifc.Index, kind); err != nil {
			errs = append(errs, fmt.Errorf("attach to %s: %w", ifc.Name, err))
			continue
		}
	}
	for idx, link := range f.attached {
		if !seen[idx] {
			if link >= 0 {
				_ = unix.Close(link)
			}
			delete(f.attached, idx)
			_ = ebpf.MapDelete(f.devs, u32(uint32(idx)))
		}
	}
	if len(errs) > 0 && len(f.attached) == 0 {
		return errors.Join(errs...)
	}
	if !f.cfg.Listen.IsValid() || f.cfg.Listen.IsUnspecified() {
		return f.syncAddrs()
	}
	return nil
}

// isEthernet reports whether the interface's frames carry an Ethernet
// header (Ethernet, Wi-Fi, bridges, VLANs, veth, tap: a 6-byte hardware
// address), not PPP, WireGuard, tun or loopback. (sysfs's type file would
// say it exactly, but /sys shows the namespace it was mounted in, not the
// caller's.) A device that passes and carries another header anyway
// fails the program's EtherType check: its datagrams take the ordinary
// path.
func isEthernet(ifc net.Interface) bool {
	return len(ifc.HardwareAddr) == 6 && ifc.Flags&(net.FlagLoopback|net.FlagPointToPoint) == 0
}

// isL3 reports whether the interface's packets start at the IP header:
// no hardware address and not loopback (PPP, PPPoE's ppp device,
// WireGuard, tun). Its program checks the packet's protocol instead of an
// EtherType, so anything else there takes the ordinary path too.
func isL3(ifc net.Interface) bool {
	return len(ifc.HardwareAddr) == 0 && ifc.Flags&net.FlagLoopback == 0
}

func u32(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}

// attach puts the program for the device's kind (devEthernet, devL3) on
// ifindex's ingress and lets the programs redirect there.
func (f *Forwarder) attach(ifindex, kind int) error {
	prog := f.prog
	if kind == devL3 {
		prog = f.progL3
	}
	if err := ebpf.MapUpdate(f.devs, u32(uint32(ifindex)), u32(uint32(kind)), unix.BPF_ANY); err != nil {
		return fmt.Errorf("device map: %w", err)
	}
	if f.tcx {
		l, err := ebpf.LinkCreate(prog, ifindex, unix.BPF_TCX_INGRESS, 0)
		if err != nil {
			return fmt.Errorf("tcx link: %w", err)
		}
		f.attached[ifindex] = l
		return nil
	}
	if err := tcRequest(unix.RTM_NEWQDISC, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, &nl.TcMsg{Ifindex: int32(ifindex),
		Handle: tcHandle(0xffff, 0), Parent: tcHandleClsact}, "clsact", nil); err != nil {
		return fmt.Errorf("clsact qdisc: %w", err)
	}
	if err := filterRequest(unix.RTM_NEWTFILTER, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, ifindex, prog); err != nil {
		return fmt.Errorf("clsact filter: %w", err)
	}
	f.attached[ifindex] = -1
	return nil
}

// Constants of include/uapi/linux/pkt_sched.h and pkt_cls.h.
const (
	tcHandleClsact    = 0xfffffff1 // TC_H_CLSACT
	tcHandleIngress   = 0xfffffff2 // TC_H_MIN_INGRESS under TC_H_CLSACT
	tcaBPFFd          = 6          // TCA_BPF_FD
	tcaBPFName        = 7          // TCA_BPF_NAME
	tcaBPFFlags       = 8          // TCA_BPF_FLAGS
	tcaBPFFlagsDirect = 1          // TCA_BPF_FLAG_ACT_DIRECT: the program's return is the verdict
)

func tcHandle(major, minor uint16) uint32 { return uint32(major)<<16 | uint32(minor) }

// filterRequest adds (RTM_NEWTFILTER) or deletes (RTM_DELTFILTER) the
// filter of prog on ifindex's clsact ingress, as `tc filter add dev X
// ingress pref 19022 handle 1 protocol ip bpf da fd N name jnrelay_fwd`.
func filterRequest(typ, flags, ifindex, prog int) error {
	msg := &nl.TcMsg{Ifindex: int32(ifindex), Handle: clsactHandle, Parent: tcHandleIngress,
		Info: tcHandle(clsactPriority, nl.Swap16(unix.ETH_P_IP))}
	if typ == unix.RTM_DELTFILTER {
		return tcRequest(typ, flags, msg, "bpf", nil)
	}
	opts := nl.NewRtAttr(nl.TCA_OPTIONS, nil)
	opts.AddRtAttr(tcaBPFFd, nl.Uint32Attr(uint32(prog)))
	opts.AddRtAttr(tcaBPFName, nl.ZeroTerminated("jnrelay_fwd"))
	opts.AddRtAttr(tcaBPFFlags, nl.Uint32Attr(tcaBPFFlagsDirect))
	return tcRequest(typ, flags, msg, "bpf", opts)
}

// tcRequest sends one tc message with its kind and options and waits for
// the kernel's acknowledgement.
func tcRequest(typ, flags int, msg *nl.TcMsg, kind string, opts *nl.RtAttr) error {
	req := nl.NewNetlinkRequest(typ, flags|unix.NLM_F_ACK)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(nl.TCA_KIND, nl.ZeroTerminated(kind)))
	if opts != nil {
		req.AddData(opts)
	}
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// syncAddrs mirrors the host's IPv4 addresses into the address map.
func (f *Forwarder) syncAddrs() error {
	addrs, err := kernel.HostAddrs()
	if err != nil {
		return err
	}
	now := map[[4]byte]bool{}
	for _, ip := range addrs {
		if !ip.Unmap().Is4() {
			continue
		}
		k := ip.Unmap().As4()
		now[k] = true
		if !f.locAddrs[k] {
			if err := ebpf.MapUpdate(f.locals, k[:], u32(1), unix.BPF_ANY); err != nil {
				return fmt.Errorf("address map: %w", err)
			}
			f.locAddrs[k] = true
		}
	}
	for k := range f.locAddrs {
		if !now[k] {
			_ = ebpf.MapDelete(f.locals, k[:])
			delete(f.locAddrs, k)
		}
	}
	return nil
}

// flowKey is a flow's map key: the datagram's source address and its
// UDP ports word (source = the peer's port, destination = the relay's).
func flowKey(fl nft.Flow) []byte {
	b := make([]byte, keySize)
	a := fl.Peer.Addr().Unmap().As4()
	copy(b, a[:])
	binary.BigEndian.PutUint16(b[4:], fl.Peer.Port())
	binary.BigEndian.PutUint16(b[6:], fl.Port)
	return b
}

// flowValue is a fresh entry: datagrams go from local:port to peer.
func flowValue(local netip.Addr, port uint16, peer netip.AddrPort) []byte {
	b := make([]byte, valueSize)
	l, p := local.Unmap().As4(), peer.Addr().Unmap().As4()
	copy(b[valSrc:], l[:])
	copy(b[valDst:], p[:])
	binary.BigEndian.PutUint16(b[valPorts:], port)
	binary.BigEndian.PutUint16(b[valPorts+2:], peer.Port())
	return b
}

// entries are a leg's two flows.
func entries(l nft.Leg) [2]struct {
	flow  nft.Flow
	value []byte
} {
	return [2]struct {
		flow  nft.Flow
		value []byte
	}{
		{l.A, flowValue(l.LocalB, l.B.Port, l.B.Peer)},
		{l.B, flowValue(l.LocalA, l.A.Port, l.A.Peer)},
	}
}

// Apply removes the legs in remove and installs those in add. A leg of
// add whose flow another installed leg uses fails the call with
// nft.ErrConflict before anything changes; a failure midway puts back
// what the call had changed. Unlike nftables' transactions, the map
// changes flow by flow: a datagram between two updates takes the old
// leg or userspace, both of which relay it.
func (f *Forwarder) Apply(remove, add []nft.Leg) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errors.New("ebpf fast path is closed")
	}
	del := map[nft.Flow]bool{}
	for _, l := range remove {
		if !f.keys[l.A] || !f.keys[l.B] {
			return fmt.Errorf("leg %s->%d / %s->%d is not installed", l.A.Peer, l.A.Port, l.B.Peer, l.B.Port)
		}
		del[l.A], del[l.B] = true, true
	}
	added := map[nft.Flow]bool{}
	for _, l := range add {
		if err := l.Valid(); err != nil {
			return err
		}
		for _, fl := range []nft.Flow{l.A, l.B} {
			if (f.keys[fl] && !del[fl]) || added[fl] {
				return fmt.Errorf("leg %s->%d / %s->%d: %w", l.A.Peer, l.A.Port, l.B.Peer, l.B.Port, nft.ErrConflict)
			}
			added[fl] = true
		}
	}
	var undo []func()
	rollback := func(err error) error {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return err
	}
	for _, l := range remove {
		for _, e := range entries(l) {
			k := flowKey(e.flow)
			old := make([]byte, valueSize)
			if err := ebpf.MapLookup(f.flows, k, old); err != nil {
				return rollback(fmt.Errorf("read flow %s->%d: %w", e.flow.Peer, e.flow.Port, err))
			}
			if err := ebpf.MapDelete(f.flows, k); err != nil {
				return rollback(fmt.Errorf("delete flow %s->%d: %w", e.flow.Peer, e.flow.Port, err))
			}
			undo = append(undo, func() { _ = ebpf.MapUpdate(f.flows, k, old, unix.BPF_NOEXIST) })
		}
	}
	for _, l := range add {
		for _, e := range entries(l) {
			k := flowKey(e.flow)
			if err := ebpf.MapUpdate(f.flows, k, e.value, unix.BPF_NOEXIST); err != nil {
				return rollback(fmt.Errorf("install flow %s->%d: %w", e.flow.Peer, e.flow.Port, err))
			}
			undo = append(undo, func() { _ = ebpf.MapDelete(f.flows, k) })
		}
	}
	for fl := range del {
		delete(f.keys, fl)
	}
	for fl := range added {
		f.keys[fl] = true
	}
	return nil
}

// batchSize is how many entries one BPF_MAP_LOOKUP_BATCH reads.
const batchSize = 1024

// Counters returns what the program forwarded for every installed flow,
// reading the map in batches of batchSize entries (BPF_MAP_LOOKUP_BATCH,
// Linux 5.6, older than any kernel the program loads on: it calls
// bpf_redirect_neigh, 5.10). It also runs Sync.
func (f *Forwarder) Counters() (map[nft.Flow]nft.Counter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, errors.New("ebpf fast path is closed")
	}
	if err := f.syncLocked(); err != nil {
		return nil, err
	}
	out := make(map[nft.Flow]nft.Counter, len(f.keys))
	put := func(k, v []byte) {
		fl := nft.Flow{Peer: netip.AddrPortFrom(netip.AddrFrom4([4]byte(k[0:4])), binary.BigEndian.Uint16(k[4:])),
			Port: binary.BigEndian.Uint16(k[6:])}
		out[fl] = nft.Counter{Packets: binary.NativeEndian.Uint64(v[valPackets:]), Bytes: binary.NativeEndian.Uint64(v[valBytes:])}
	}
	if len(f.keys) == 0 {
		return out, nil
	}
	if f.bKeys == nil {
		f.bKeys, f.bVals = make([]byte, batchSize*keySize), make([]byte, batchSize*valueSize)
	}
	var token, next [4]byte
	var in []byte // nil: from the start
	for {
		n, last, err := ebpf.MapLookupBatch(f.flows, in, next[:], f.bKeys, f.bVals, batchSize)
		if err != nil {
			return nil, fmt.Errorf("read flow counters: %w", err)
		}
		for i := range n {
			put(f.bKeys[i*keySize:(i+1)*keySize], f.bVals[i*valueSize:(i+1)*valueSize])
		}
		if last {
			return out, nil
		}
		token = next
		in = token[:]
	}
}

// Close detaches the program from every interface (from then on every
// datagram takes the ordinary path to relayd's sockets) and frees the
// maps. It is idempotent.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	var errs []error
	for idx, link := range f.attached {
		if link >= 0 {
			errs = append(errs, unix.Close(link))
		} else if err := filterRequest(unix.RTM_DELTFILTER, 0, idx, -1); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("remove the clsact filter of interface %d: %w", idx, err))
		}
	}
	f.attached = map[int]int{}
	f.closeFDs()
	return errors.Join(errs...)
}

func (f *Forwarder) closeFDs() {
	for _, fd := range []*int{&f.prog, &f.progL3, &f.flows, &f.locals, &f.devs} {
		if *fd >= 0 {
			_ = unix.Close(*fd)
			*fd = -1
		}
	}
}

// Name names the fast path for logs.
func (f *Forwarder) Name() string {
	if f.tcx {
		return "eBPF program on tc ingress (tcx)"
	}
	return "eBPF program on tc ingress (clsact)"
}
