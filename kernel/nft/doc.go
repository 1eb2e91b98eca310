// Package nft is relayd's in-kernel fast path: one nftables table that
// forwards the datagrams of latched relay legs without waking userspace.
// It knows nothing of channels or XMPP; relayd/channel decides what to
// offload and when.
//
// The table ("ip jnrelay" by default) is stateless: it rewrites headers
// itself instead of asking conntrack NAT to, so every datagram passes the
// rules (exact per-flow counters, changes take effect on the next
// datagram, no conntrack entries to flush or to exhaust):
//
//	chain pre  (filter, prerouting, priority raw):
//	  IPv4 without options, not a fragment, UDP, addressed to the relay,
//	  UDP length <= 1508 (payload <= 1500)
//	  ip saddr . udp sport . udp dport  →  map @fwd (with a counter per element)
//	  notrack; ip daddr, udp dport := the peer latched on the other port
//	chain post (filter, postrouting, priority srcnat):
//	  ct state untracked
//	  ip daddr . udp dport . ip saddr . udp sport  →  map @src
//	  ip saddr, udp sport := the relay's address and port facing that peer
//
// The kernel then routes the rewritten datagram like any forwarded packet,
// so net.ipv4.ip_forward must be 1 (Open refuses otherwise: relayd does not
// turn a host into a router behind its operator's back). The source is
// rewritten after routing, in postrouting, because a datagram arriving
// with one of the host's own addresses as its source would be dropped as
// a martian in the routing decision. Checksums (IPv4 header, UDP with its
// pseudo-header; a UDP checksum of 0 stays 0) are updated incrementally by
// the payload statements.
//
// A datagram that matches no element — another source, another port, an
// oversize datagram, a fragment, IP options — goes its normal way to the
// relay's socket, where userspace drops and counts it.
//
// Each forwarded direction (a Flow: a peer sending to a relay port) is one
// element of @fwd, and its counter is the number of datagrams and bytes the
// kernel forwarded for it; Counters reads them all in one dump.
//
// With Config.Flowtable the table is the flowtable variant instead
// (flowtable_linux.go): the same maps drive conntrack DNAT and SNAT in a
// conntrack zone of their own, and a flowtable takes each leg's entry past
// netfilter (in the switch's hardware where the devices allow it);
// counters then come from conntrack accounting, a new leg's entry is
// made over ctnetlink when it is installed (before its first datagrams,
// which would otherwise race to make it) and a removed leg's entries are
// deleted over ctnetlink.
//
// Open deletes a table of the same name left by a crashed run, creates the
// table, and reports why the fast path is unavailable (no CAP_NET_ADMIN, no
// nf_tables, forwarding off, br_netfilter calling the IPv4 hooks for a
// bridge with an address: brnetfilter_linux.go) as an *UnavailableError. Close deletes the
// table. Everything runs in the network namespace of the thread that called
// Open (the netlink socket is bound to it).
package nft
