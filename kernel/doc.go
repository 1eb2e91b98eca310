// Package kernel is relayd's thin Linux layer: batched UDP I/O
// (recvmmsg/sendmmsg, GSO/GRO), the sockets it hands out and takes back,
// socket options, classic and extended BPF programs, the host's interface
// addresses (HostAddrs; watching them change is relayd/publicaddr's job)
// and the open-file limit. It holds no business logic.
//
// Batched I/O (sockets_linux.go, batch_linux.go, poll_linux.go): OpenUDP
// opens non-blocking relay ports and OpenRawSender raw senders, as a
// Socket its owner configures through methods and gives back with Close
// (no caller makes system calls on the descriptor); RecvBatch and
// SendBatch move up to a batch of datagrams per recvmmsg/sendmmsg without
// allocating; Poller is an epoll instance whose waits park in the Go
// runtime's own poller.
//
// Socket options (sockopt_linux.go): SetBuffers sizes a socket's buffers
// past net.core.rmem_max when it holds CAP_NET_ADMIN and reports what the
// kernel applied (twice the request); BufferSizeFor is the per-socket size
// for a given number of sockets. SetDSCP marks voice traffic EF on IPv4,
// IPv6 and IPv4-mapped destinations. EnablePktInfo/ParsePktInfo give each
// datagram's destination address and interface; EnableRxqOvfl/ParseRxqOvfl
// and Drops expose the socket's drop counter. OOBSpace sizes the control
// buffer for all of them.
//
// Source filter (filter_linux.go): AttachSourceFilter attaches a classic BPF
// program, unprivileged, that makes the kernel drop every datagram not from
// the latched ip:port before it is queued; DetachFilter removes it. Dropped
// datagrams are counted only in the socket's drop counter, together with
// buffer overflows.
//
// Features (features_linux.go): Detect probes GSO, GRO, RXQ_OVFL, pktinfo,
// forced buffers and the source filter once, the filter end to end, so the
// daemon can log what it uses and fall back for the rest.
//
// README.md lists kernel versions, privileges, fallbacks and the measured
// BPF offsets.
package kernel
