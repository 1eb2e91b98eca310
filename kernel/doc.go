// Package kernel is relayd's thin Linux layer: batched UDP I/O
// (recvmmsg/sendmmsg, GSO/GRO), socket options, classic and extended BPF
// programs, netlink address watching and sysctl checks. It holds no
// business logic.
//
// It is empty in this first version: the data plane (relayd/channel) uses
// plain per-port sockets from the standard library. The data-plane scaling
// work fills it, each facility with a userspace fallback.
package kernel
