package kernel

// MaxDatagram is the largest UDP payload relayd forwards, in userspace
// (relayd/channel) and in the kernel's fast paths (kernel/nft,
// kernel/tcfwd) alike. It covers a full 1500-byte Ethernet frame's payload
// and more; larger datagrams are dropped and counted, never truncated.
// One constant, so the paths can never disagree about which datagram is
// too large.
const MaxDatagram = 1500
