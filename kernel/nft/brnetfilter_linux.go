//go:build !nofastpath

package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// br_netfilter (the module Docker, Kubernetes and many firewalls load)
// passes the IPv4 frames a bridge receives through the IPv4 hooks, from
// the bridge, before the bridge decides where a frame goes. When a rule
// there changes a frame's destination address — the fast path's
// rewrite, stateless or conntrack DNAT — and the new destination is
// routed out of the same bridge, br_netfilter bridges the frame to the
// new destination's next hop instead of letting the host route it
// ("DNAT to a bridged host"). On a host whose uplink is a bridge
// (Proxmox's vmbr0, a LAN bridge) both peers are usually reached through
// the router on one bridge port, and a bridge never sends a frame back
// out of the port it came in on: every forwarded datagram is lost. The
// eBPF fast path runs at the devices' ingress, before the bridge, and is
// not affected.

// brNetfilterSysctl is br_netfilter's switch for IPv4, per network
// namespace; it exists while the module is loaded.
const brNetfilterSysctl = "/proc/sys/net/bridge/bridge-nf-call-iptables"

// CheckBrNetfilter refuses the nftables fast path when br_netfilter
// passes the IPv4 frames of a bridge that is up and holds an IPv4 address
// (one the relay's datagrams can arrive over) through the IPv4 hooks:
// net.bridge.bridge-nf-call-iptables is 1, or the bridge's own
// nf_call_iptables option is on. It looks in the calling thread's network
// namespace, where the fast path is opened.
func CheckBrNetfilter() error {
	b, err := os.ReadFile(brNetfilterSysctl)
	if errors.Is(err, os.ErrNotExist) {
		return nil // br_netfilter is not loaded
	}
	if err != nil {
		return &UnavailableError{Reason: "br_netfilter", Err: fmt.Errorf("read net.bridge.bridge-nf-call-iptables: %w", err)}
	}
	sysctlOn := strings.TrimSpace(string(b)) == "1"
	bridges, err := listBridges()
	if err != nil {
		return &UnavailableError{Reason: "br_netfilter", Err: fmt.Errorf("br_netfilter is loaded and the bridges cannot be listed: %w", err)}
	}
	for _, br := range bridges {
		if !br.up || !(sysctlOn || br.nfCallIPTables) {
			continue
		}
		has, err := hasIPv4(br.index)
		if err != nil {
			return &UnavailableError{Reason: "br_netfilter", Err: fmt.Errorf("addresses of bridge %s: %w", br.name, err)}
		}
		if has {
			return &UnavailableError{Reason: "br_netfilter", Err: fmt.Errorf("br_netfilter passes bridge %s's IPv4 frames through the IPv4 hooks "+
				"(net.bridge.bridge-nf-call-iptables or the bridge's nf_call_iptables is 1): it would bridge rewritten datagrams "+
				"instead of routing them, and lose those sent back out of the port they came in on (use the eBPF fast path)", br.name)}
		}
	}
	return nil
}

// bridge is what CheckBrNetfilter needs of a bridge device.
type bridge struct {
	name           string
	index          int
	up             bool
	nfCallIPTables bool // the bridge's nf_call_iptables option
}

// listBridges dumps the links of the calling thread's network namespace
// and returns the bridges. (sysfs would show the namespace it was mounted
// in, not the caller's.)
func listBridges() ([]bridge, error) {
	rib, err := syscall.NetlinkRIB(unix.RTM_GETLINK, unix.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("dump links: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(rib)
	if err != nil {
		return nil, fmt.Errorf("parse link dump: %w", err)
	}
	var out []bridge
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Type != unix.RTM_NEWLINK || len(m.Data) < unix.SizeofIfInfomsg {
			continue
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(m)
		if err != nil {
			return nil, fmt.Errorf("parse link attributes: %w", err)
		}
		br := bridge{
			index: int(int32(binary.NativeEndian.Uint32(m.Data[4:8]))),
			up:    binary.NativeEndian.Uint32(m.Data[8:12])&unix.IFF_UP != 0,
		}
		isBridge := false
		for _, a := range attrs {
			switch a.Attr.Type {
			case unix.IFLA_IFNAME:
				br.name = strings.TrimRight(string(a.Value), "\x00")
			case unix.IFLA_LINKINFO:
				isBridge, br.nfCallIPTables = parseLinkInfo(a.Value)
			}
		}
		if isBridge {
			out = append(out, br)
		}
	}
	return out, nil
}

// parseLinkInfo reads IFLA_LINKINFO's kind and, for a bridge, its
// nf_call_iptables option, as far as the attributes are well formed.
func parseLinkInfo(b []byte) (isBridge, nfCallIPTables bool) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return false, false
	}
	var data []byte
	for ad.Next() {
		switch ad.Type() {
		case unix.IFLA_INFO_KIND:
			isBridge = ad.String() == "bridge"
		case unix.IFLA_INFO_DATA:
			data = ad.Bytes()
		}
	}
	if !isBridge || data == nil {
		return isBridge, false
	}
	dd, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return true, false
	}
	for dd.Next() {
		if dd.Type() == unix.IFLA_BR_NF_CALL_IPTABLES && len(dd.Bytes()) >= 1 {
			nfCallIPTables = dd.Bytes()[0] != 0
		}
	}
	return true, nfCallIPTables
}

// hasIPv4 reports whether the interface holds an IPv4 address.
func hasIPv4(index int) (bool, error) {
	ifc, err := net.InterfaceByIndex(index)
	if err != nil {
		return false, err
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			return true, nil
		}
	}
	return false, nil
}
