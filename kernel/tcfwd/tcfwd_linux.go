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
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

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
