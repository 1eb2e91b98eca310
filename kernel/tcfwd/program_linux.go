package tcfwd

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel/internal/ebpf"
)

// Layout of a flow's map entry. The key is the datagram's own bytes, so
// it needs no byte-order conversion: the peer's address (IPv4 header
// offset 12) and the UDP ports word (source then destination, UDP header
// offset 0).
const (
	keySize = 8

	valSrc     = 0  // __be32: the relay's address toward the other peer
	valDst     = 4  // __be32: the other peer's address
	valPorts   = 8  // __be16 relay port, __be16 peer port: the new UDP ports word
	valPackets = 16 // __u64, atomically added by the program
	valBytes   = 24 // __u64: UDP payload bytes
	valueSize  = 32
)

// Offsets in the IPv4 header (20 bytes, then UDP) from its start, which
// is at ethLen in an Ethernet frame and at 0 on an L3 device (PPP,
// WireGuard, tun), and in struct __sk_buff and struct bpf_fib_lookup
// (include/uapi/linux/bpf.h).
const (
	ethLen    = 14
	ethProto  = 12
	ipVerIHL  = 0
	ipTotLen  = 2
	ipFrag    = 6
	ipProto   = 9
	ipCsum    = 10
	ipSaddr   = 12
	ipDaddr   = 16
	udpStart  = 20
	udpLen    = udpStart + 4
	udpCsum   = udpStart + 6
	headerLen = udpStart + 8

	skbLen            = 0
	skbProtocol       = 16
	skbVlanPresent    = 20
	skbIngressIfindex = 36
	skbData           = 76
	skbDataEnd        = 80
	skbGsoSegs        = 164

	fibSize    = 64
	fibFamily  = 0
	fibL4Proto = 1
	fibSport   = 2
	fibDport   = 4
	fibTotLen  = 6
	fibIfindex = 8
	fibIPv4Src = 16
	fibIPv4Dst = 32
	fibSmac    = 52
	fibDmac    = 58
)

// Stack frame (offsets from r10).
const (
	stFib      = -80 // struct bpf_fib_lookup, 64 bytes
	stKey      = -16 // the flow key: peer address, ports word
	stOldDaddr = -8  // the datagram's destination address before the rewrite
	stScratch  = -4  // a local-address key, then the payload length
	stDevKind  = -84 // the output device's entry in devs: devEthernet or devL3
	stEthType  = -88 // ETH_P_IP in network order, for a pushed Ethernet header
)

// Helpers and flags (include/uapi/linux/bpf.h).
const (
	helperSkbStoreBytes = 9
	helperL3CsumReplace = 10
	helperL4CsumReplace = 11
	helperRedirect      = 23
	helperFibLookup     = 69
	helperRedirectNeigh = 152
	helperSkbChangeHead = 43

	fibSuccess = 0 // BPF_FIB_LKUP_RET_SUCCESS
	fibNoNeigh = 7 // BPF_FIB_LKUP_RET_NO_NEIGH

	fPseudoHdr    = 1 << 4 // BPF_F_PSEUDO_HDR
	fMarkMangled0 = 1 << 5 // BPF_F_MARK_MANGLED_0

	actUnspec = -1 // TC_ACT_UNSPEC, TCX_NEXT: the next program or the stack decides

	// The device map's values: the kind of header a device's packets
	// carry.
	devEthernet = 1
	devL3       = 2
)

// net16 and net32 are a network-order field as the program's load of it
// reads: the loads are in host order.
func net16(v uint16) int32 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return int32(binary.NativeEndian.Uint16(b[:]))
}

func net32(a netip.Addr) int32 {
	b := a.As4()
	return int32(binary.NativeEndian.Uint32(b[:]))
}

// fold emits r = the 32-bit one's complement fold of the 64-bit sum in r
// (scratch: rt), as the kernel's csum_add carries.
func fold(a *ebpf.Asm, r, rt uint8) {
	for range 2 {
		a.Emit(
			ebpf.I(ebpf.OpMovReg, rt, r, 0, 0),
			ebpf.I(ebpf.OpRshImm, rt, 0, 0, 32),
			ebpf.I(ebpf.OpMov32Reg, r, r, 0, 0),
			ebpf.I(ebpf.OpAddReg, r, rt, 0, 0),
		)
	}
}

// program is the forwarder, attached to the ingress of Ethernet
// interfaces, or with l3 of L3 devices (PPP, WireGuard, tun), whose
// packets start at the IPv4 header. In C:
//
//	if (skb->gso_segs > 1 || skb->len > l2 header + 28 + maxPayload) return NEXT;
//	if (skb->vlan_present) return NEXT; // the VLAN device's turn comes next
//	eth, ip, udp = headers, bounds-checked; not IPv4 with a 20-byte
//	  header, UDP, unfragmented: return NEXT;
//	if (ip->daddr is not the relay's (listen, or in locals)) return NEXT;
//	if (udp->len < 8 || udp->len > 8+maxPayload || udp->len > ip->tot_len-20) return NEXT;
//	v = lookup(flows, {ip->saddr, udp->ports}); if (!v) return NEXT;
//	fib = {AF_INET, UDP, new ports, tot_len, skb->ingress_ifindex, v->src, v->dst};
//	r = bpf_fib_lookup(skb, &fib, 64, 0);
//	if (r != SUCCESS && r != NO_NEIGH) return NEXT;
//	kind = lookup(devs, fib.ifindex); if (!kind) return NEXT; // not a device of ours
//	v->packets += 1; v->bytes += payload;          // atomic
//	rewrite addresses and ports with incremental checksums;
//	if (l3) {
//		if (kind == L3) return bpf_redirect(fib.ifindex, 0);
//		if (bpf_skb_change_head(skb, 14, 0)) return NEXT; // room for an Ethernet header
//		EtherType = IPv4;
//	}
//	if (r == NO_NEIGH) return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
//	MAC addresses from fib; return bpf_redirect(fib.ifindex, 0); // egress
//
// bpf_redirect from an Ethernet device to an L3 one drops the Ethernet
// header itself.
//
// Everything it declines takes the ordinary path to relayd's socket,
// which relays it (or drops and counts it) in userspace: the kernel path
// is an accelerator, never the only way.
func program(listen netip.Addr, l3 bool, flows, locals, devs int) []ebpf.Insn {
	a := &ebpf.Asm{}
	const next = "next"
	I := ebpf.I
	var ip int16 = ethLen // where the IPv4 header starts
	if l3 {
		ip = 0
	}
	a.Emit(
		I(ebpf.OpMovReg, 6, 1, 0, 0), // r6 = skb
		I(ebpf.OpLdxW, 2, 6, skbGsoSegs, 0),
	)
	a.Jump(ebpf.OpJgtImm, 2, 0, 1, next)
	a.Emit(I(ebpf.OpLdxW, 2, 6, skbLen, 0))
	a.Jump(ebpf.OpJgtImm, 2, 0, int32(ip)+headerLen+maxPayload, next)
	// An 802.1Q-tagged frame (its tag already taken out of the data by
	// the stack) is not for this device's addresses and routes: the
	// kernel hands it to the VLAN device next (eth0.2, a router's WAN),
	// whose own copy of the program takes it; with no such device the
	// stack drops it, and so must we.
	a.Emit(I(ebpf.OpLdxW, 2, 6, skbVlanPresent, 0))
	a.Jump(ebpf.OpJneImm, 2, 0, 0, next)
	a.Emit(
		I(ebpf.OpLdxW, 7, 6, skbData, 0), // r7 = data
		I(ebpf.OpLdxW, 8, 6, skbDataEnd, 0),
		I(ebpf.OpMovReg, 2, 7, 0, 0),
		I(ebpf.OpAddImm, 2, 0, 0, int32(ip)+headerLen),
	)
	a.Jump(ebpf.OpJgtReg, 2, 8, 0, next)
	if l3 {
		a.Emit(I(ebpf.OpLdxW, 2, 6, skbProtocol, 0))
	} else {
		a.Emit(I(ebpf.OpLdxH, 2, 7, ethProto, 0))
	}
	a.Jump(ebpf.OpJneImm, 2, 0, net16(unix.ETH_P_IP), next)
	a.Emit(I(ebpf.OpLdxB, 2, 7, ip+ipVerIHL, 0))
	a.Jump(ebpf.OpJneImm, 2, 0, 0x45, next)
	a.Emit(I(ebpf.OpLdxB, 2, 7, ip+ipProto, 0))
	a.Jump(ebpf.OpJneImm, 2, 0, unix.IPPROTO_UDP, next)
	a.Emit(
		I(ebpf.OpLdxH, 2, 7, ip+ipFrag, 0),
		I(ebpf.OpAndImm, 2, 0, 0, net16(0x3fff)), // MF and the fragment offset
	)
	a.Jump(ebpf.OpJneImm, 2, 0, 0, next)
	a.Emit(
		I(ebpf.OpLdxW, 2, 7, ip+ipDaddr, 0),
		I(ebpf.OpStxW, 10, 2, stOldDaddr, 0),
	)
	if listen.IsValid() && !listen.IsUnspecified() {
		a.Jump(ebpf.OpJneImm, 2, 0, net32(listen), next)
	} else {
		// Bound to every address: the host's own only, never a datagram
		// routed through it to someone else's port.
		a.Emit(I(ebpf.OpStxW, 10, 2, stScratch, 0))
		a.Lookup(locals, stScratch)
		a.Jump(ebpf.OpJeqImm, 0, 0, 0, next)
	}
	// Lengths: the payload must fit relayd's limit (larger ones go to the
	// socket, which drops and counts them) and the IP datagram.
	a.Emit(
		I(ebpf.OpLdxH, 2, 7, ip+udpLen, 0),
		I(ebpf.OpToBE, 2, 0, 0, 16),
	)
	a.Jump(ebpf.OpJltImm, 2, 0, 8, next)
	a.Jump(ebpf.OpJgtImm, 2, 0, 8+maxPayload, next)
	a.Emit(
		I(ebpf.OpLdxH, 3, 7, ip+ipTotLen, 0),
		I(ebpf.OpToBE, 3, 0, 0, 16),
		I(ebpf.OpSubImm, 3, 0, 0, 20),
	)
	a.Jump(ebpf.OpJgtReg, 2, 3, 0, next)
	a.Emit(
		I(ebpf.OpSubImm, 2, 0, 0, 8),
		I(ebpf.OpStxW, 10, 2, stScratch, 0), // payload length
		// The key, straight from the headers.
		I(ebpf.OpLdxW, 2, 7, ip+ipSaddr, 0),
		I(ebpf.OpStxW, 10, 2, stKey, 0),
		I(ebpf.OpLdxW, 2, 7, ip+udpStart, 0),
		I(ebpf.OpStxW, 10, 2, stKey+4, 0),
	)
	a.Lookup(flows, stKey)
	a.Jump(ebpf.OpJeqImm, 0, 0, 0, next)
	a.Emit(I(ebpf.OpMovReg, 9, 0, 0, 0)) // r9 = the flow's entry
	// Where does the rewritten datagram go? The kernel's routing and
	// neighbour tables say: output device and both MAC addresses.
	for off := int16(0); off < fibSize; off += 8 {
		a.Emit(I(ebpf.OpStDW, 10, 0, stFib+off, 0))
	}
	a.Emit(
		I(ebpf.OpStB, 10, 0, stFib+fibFamily, unix.AF_INET),
		I(ebpf.OpStB, 10, 0, stFib+fibL4Proto, unix.IPPROTO_UDP),
		I(ebpf.OpLdxH, 2, 9, valPorts, 0),
		I(ebpf.OpStxH, 10, 2, stFib+fibSport, 0),
		I(ebpf.OpLdxH, 2, 9, valPorts+2, 0),
		I(ebpf.OpStxH, 10, 2, stFib+fibDport, 0),
		I(ebpf.OpLdxH, 2, 7, ip+ipTotLen, 0),
		I(ebpf.OpToBE, 2, 0, 0, 16),
		I(ebpf.OpStxH, 10, 2, stFib+fibTotLen, 0),
		I(ebpf.OpLdxW, 2, 6, skbIngressIfindex, 0),
		I(ebpf.OpStxW, 10, 2, stFib+fibIfindex, 0),
		I(ebpf.OpLdxW, 2, 9, valSrc, 0),
		I(ebpf.OpStxW, 10, 2, stFib+fibIPv4Src, 0),
		I(ebpf.OpLdxW, 2, 9, valDst, 0),
		I(ebpf.OpStxW, 10, 2, stFib+fibIPv4Dst, 0),
		I(ebpf.OpMovReg, 1, 6, 0, 0),
		I(ebpf.OpMovReg, 2, 10, 0, 0),
		I(ebpf.OpAddImm, 2, 0, 0, stFib),
		I(ebpf.OpMovImm, 3, 0, 0, fibSize),
		I(ebpf.OpMovImm, 4, 0, 0, 0),
		I(ebpf.OpCall, 0, 0, 0, helperFibLookup),
	)
	// r8 (the packet's end, no longer needed) says whether the MAC
	// addresses are known: 0, or 1 when the next hop has no neighbour
	// entry yet and the kernel resolves it (bpf_redirect_neigh queues the
	// datagram meanwhile, as the stack would).
	a.Emit(I(ebpf.OpMovImm, 8, 0, 0, 0))
	a.Jump(ebpf.OpJeqImm, 0, 0, fibSuccess, "routed")
	a.Jump(ebpf.OpJneImm, 0, 0, fibNoNeigh, next) // no route, forwarding off, MTU, ...
	a.Emit(I(ebpf.OpMovImm, 8, 0, 0, 1))
	a.Label("routed")
	a.Lookup(devs, stFib+fibIfindex)
	a.Jump(ebpf.OpJeqImm, 0, 0, 0, next)
	a.Emit(
		I(ebpf.OpLdxW, 2, 0, 0, 0),
		I(ebpf.OpStxW, 10, 2, stDevKind, 0),
	)
	// Committed: count it.
	a.Emit(
		I(ebpf.OpMovImm, 2, 0, 0, 1),
		I(ebpf.OpXaddDW, 9, 2, valPackets, 0),
		I(ebpf.OpLdxW, 2, 10, stScratch, 0),
		I(ebpf.OpXaddDW, 9, 2, valBytes, 0),
		// The addresses' checksum difference, for the IP header and the
		// UDP pseudo-header: ~old saddr + ~old daddr + new saddr + new daddr.
		I(ebpf.OpLdxW, 2, 10, stKey, 0),
		I(ebpf.OpXor32Imm, 2, 0, 0, -1),
		I(ebpf.OpLdxW, 3, 10, stOldDaddr, 0),
		I(ebpf.OpXor32Imm, 3, 0, 0, -1),
		I(ebpf.OpAddReg, 2, 3, 0, 0),
		I(ebpf.OpLdxW, 3, 9, valSrc, 0),
		I(ebpf.OpAddReg, 2, 3, 0, 0),
		I(ebpf.OpLdxW, 3, 9, valDst, 0),
		I(ebpf.OpAddReg, 2, 3, 0, 0),
	)
	fold(a, 2, 3)
	a.Emit(
		I(ebpf.OpMovReg, 7, 2, 0, 0), // r7 = address diff (packet pointers die with the first rewrite)
		I(ebpf.OpMovReg, 1, 6, 0, 0),
		I(ebpf.OpMovImm, 2, 0, 0, int32(ip)+ipCsum),
		I(ebpf.OpMovImm, 3, 0, 0, 0),
		I(ebpf.OpMovReg, 4, 7, 0, 0),
		I(ebpf.OpMovImm, 5, 0, 0, 0), // size 0: r4 is a difference
		I(ebpf.OpCall, 0, 0, 0, helperL3CsumReplace),
		I(ebpf.OpMovReg, 1, 6, 0, 0),
		I(ebpf.OpMovImm, 2, 0, 0, int32(ip)+udpCsum),
		I(ebpf.OpMovImm, 3, 0, 0, 0),
		I(ebpf.OpMovReg, 4, 7, 0, 0),
		I(ebpf.OpMovImm, 5, 0, 0, fPseudoHdr|fMarkMangled0),
		I(ebpf.OpCall, 0, 0, 0, helperL4CsumReplace),
		// The ports' difference, for the UDP checksum alone.
		I(ebpf.OpLdxW, 4, 10, stKey+4, 0),
		I(ebpf.OpXor32Imm, 4, 0, 0, -1),
		I(ebpf.OpLdxW, 3, 9, valPorts, 0),
		I(ebpf.OpAddReg, 4, 3, 0, 0),
	)
	fold(a, 4, 3)
	a.Emit(
		I(ebpf.OpMovReg, 1, 6, 0, 0),
		I(ebpf.OpMovImm, 2, 0, 0, int32(ip)+udpCsum),
		I(ebpf.OpMovImm, 3, 0, 0, 0),
		I(ebpf.OpMovImm, 5, 0, 0, fMarkMangled0),
		I(ebpf.OpCall, 0, 0, 0, helperL4CsumReplace),
		// Addresses and ports: 12 bytes from the IPv4 source address on,
		// as the entry holds them.
		I(ebpf.OpMovReg, 1, 6, 0, 0),
		I(ebpf.OpMovImm, 2, 0, 0, int32(ip)+ipSaddr),
		I(ebpf.OpMovReg, 3, 9, 0, 0),
		I(ebpf.OpMovImm, 4, 0, 0, 12),
		I(ebpf.OpMovImm, 5, 0, 0, 0),
		I(ebpf.OpCall, 0, 0, 0, helperSkbStoreBytes),
	)
	redirectWithMACs := func() {
		a.Jump(ebpf.OpJneImm, 8, 0, 0, "resolve")
		// The Ethernet header: destination MAC at 0, source at 6, from fib.
		for _, mac := range [...]struct{ at, from int32 }{{0, stFib + fibDmac}, {6, stFib + fibSmac}} {
			a.Emit(
				I(ebpf.OpMovReg, 1, 6, 0, 0),
				I(ebpf.OpMovImm, 2, 0, 0, mac.at),
				I(ebpf.OpMovReg, 3, 10, 0, 0),
				I(ebpf.OpAddImm, 3, 0, 0, mac.from),
				I(ebpf.OpMovImm, 4, 0, 0, 6),
				I(ebpf.OpMovImm, 5, 0, 0, 0),
				I(ebpf.OpCall, 0, 0, 0, helperSkbStoreBytes),
			)
		}
		a.Label("redirect")
		a.Emit(
			I(ebpf.OpLdxW, 1, 10, stFib+fibIfindex, 0),
			I(ebpf.OpMovImm, 2, 0, 0, 0), // to the device's egress
			I(ebpf.OpCall, 0, 0, 0, helperRedirect),
			I(ebpf.OpExit, 0, 0, 0, 0),
		)
	}
	if l3 {
		// To an L3 device: as it is (bpf_redirect_neigh wants an Ethernet
		// header to replace, and a NOARP device needs no neighbour).
		a.Emit(I(ebpf.OpLdxW, 2, 10, stDevKind, 0))
		a.Jump(ebpf.OpJeqImm, 2, 0, devL3, "redirect")
		// To an Ethernet device: push the header first. Should the kernel
		// fail to grow the packet, the rewritten datagram goes on to the
		// stack, which forwards it all the same.
		a.Emit(
			I(ebpf.OpMovReg, 1, 6, 0, 0),
			I(ebpf.OpMovImm, 2, 0, 0, ethLen),
			I(ebpf.OpMovImm, 3, 0, 0, 0),
			I(ebpf.OpCall, 0, 0, 0, helperSkbChangeHead),
		)
		a.Jump(ebpf.OpJneImm, 0, 0, 0, next)
		a.Emit(
			I(ebpf.OpStH, 10, 0, stEthType, net16(unix.ETH_P_IP)),
			I(ebpf.OpMovReg, 1, 6, 0, 0),
			I(ebpf.OpMovImm, 2, 0, 0, ethProto),
			I(ebpf.OpMovReg, 3, 10, 0, 0),
			I(ebpf.OpAddImm, 3, 0, 0, stEthType),
			I(ebpf.OpMovImm, 4, 0, 0, 2),
			I(ebpf.OpMovImm, 5, 0, 0, 0),
			I(ebpf.OpCall, 0, 0, 0, helperSkbStoreBytes),
		)
	}
	redirectWithMACs()
	a.Label("resolve")
	a.Emit(
		I(ebpf.OpLdxW, 1, 10, stFib+fibIfindex, 0),
		I(ebpf.OpMovImm, 2, 0, 0, 0), // no next hop given: the kernel routes
		I(ebpf.OpMovImm, 3, 0, 0, 0),
		I(ebpf.OpMovImm, 4, 0, 0, 0),
		I(ebpf.OpCall, 0, 0, 0, helperRedirectNeigh),
		I(ebpf.OpExit, 0, 0, 0, 0),
	)
	a.Label(next)
	a.Emit(
		I(ebpf.OpMovImm, 0, 0, 0, actUnspec),
		I(ebpf.OpExit, 0, 0, 0, 0),
	)
	return a.Program()
}
