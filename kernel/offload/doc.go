// Package offload is the fast path by privilege separation: a small
// broker process holds the kernel objects of the in-kernel fast path
// (kernel/tcfwd's eBPF program, kernel/nft's table) and the capabilities
// they need (CAP_BPF, CAP_NET_ADMIN), while relayd, which keeps none,
// asks it over a unix stream socket to open a table, add and remove legs
// and read counters. Table is that client; it implements the same
// methods as *tcfwd.Forwarder and *nft.Table.
//
// The broker's job is to give relayd no power through it beyond what
// relayd has in userspace — sending UDP from its own relay ports to any
// peer. So it serves one client at a time, only the uid it was told
// (SO_PEERCRED), and installs a leg only when every port it takes
// datagrams from is a UDP port on which the kernel would deliver them to
// a socket that client's uid owns (NETLINK_SOCK_DIAG, validate.go), at
// the listen address it opened with, within the flows it may hold. It
// checks installed legs again periodically, so a port given up is taken
// out of the kernel. When the client goes, so does its table.
//
// The protocol (protocol.go) is JSON frames behind a 4-byte big-endian
// length, each at most MaxFrame bytes, with a version in every message.
package offload
