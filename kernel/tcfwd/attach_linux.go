package tcfwd

// Attaching the program to the host's interfaces, and keeping the maps of
// its devices and addresses in step with them.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel"
	"github.com/jnrelay/jnrelay/kernel/internal/ebpf"
)

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
