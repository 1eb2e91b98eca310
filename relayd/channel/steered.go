package channel

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel"
)

// Steered mode (Config.Steered) serves the whole port range from one UDP
// socket per worker instead of a socket per port: a BPF sk_lookup program
// (kernel.Steering) hands every datagram for port p to worker p mod n,
// which learns p from IP_ORIGDSTADDR, relays by the same rules as the
// per-port path, and sends from the right relay port through a raw socket
// (kernel.RawSendBatch), a whole receive batch of many channels at once.
// Channels then cost no file descriptors, so the range is not bounded by
// RLIMIT_NOFILE, and one system call pair moves datagrams of many calls.
//
// It needs Linux ≥ 5.9, an IPv4 listen address, CAP_BPF (or CAP_SYS_ADMIN),
// CAP_NET_ADMIN and CAP_NET_RAW. The in-kernel fast path and the shield are
// per-socket features and stay off.
//
// Each port always reaches the same worker, so every side keeps a single
// writer of its latch, as in the per-port path.

// steerToken is the poller token of a worker's steered socket.
const steerToken = kernel.WakeToken - 1

// steerBatch is how many datagrams one steered receive (and send) moves:
// the socket serves every port of the worker, so batches fill up.
const steerBatch = 64

// steeredIO is one worker's steered socket and raw sender.
type steeredIO struct {
	fd, raw int
	recv    *kernel.RecvBatch
	send    *kernel.RawSendBatch
	queued  [steerBatch]queuedDatagram
}

// queuedDatagram remembers what a queued datagram was counted as, to take
// it back if the kernel refuses it.
type queuedDatagram struct {
	c   *Channel
	dir Direction
	n   int
	now int64
}

func openSteeredIO(listen netip.Addr) (*steeredIO, error) {
	fd, err := kernel.OpenUDP(netip.AddrPortFrom(listen, 0))
	if err != nil {
		return nil, fmt.Errorf("steered socket: %w", err)
	}
	if err := kernel.EnableOrigDst(fd); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// One socket queues for every port of the worker.
	kernel.SetBuffers(fd, 4*kernel.HotFlowBuffer, 0)
	raw, err := kernel.OpenRawSender()
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &steeredIO{fd: fd, raw: raw,
		recv: kernel.NewRecvBatch(steerBatch, MaxDatagram+1).WithControl(64),
		send: kernel.NewRawSendBatch(steerBatch)}, nil
}

func (s *steeredIO) close() {
	unix.Close(s.fd)
	unix.Close(s.raw)
}

// steer attaches steering of first..last to the workers' sockets. Earlier
// steerings stay attached, so channels of an old range keep working after
// a reconfiguration; they all map a port to the same worker.
func (m *Manager) steer(first, last int) error {
	st, err := kernel.NewSteering(m.cfg.Listen, first, last, len(m.workers))
	if err != nil {
		return err
	}
	for i, w := range m.workers {
		if err := st.SetSocket(i, w.steered.fd); err != nil {
			return errors.Join(err, st.Close())
		}
	}
	m.steerMu.Lock()
	m.steerings = append(m.steerings, st)
	m.steerMu.Unlock()
	return nil
}

// unsteer detaches every steering program.
func (m *Manager) unsteer() {
	m.steerMu.Lock()
	defer m.steerMu.Unlock()
	for _, st := range m.steerings {
		st.Close()
	}
	m.steerings = nil
}

// serveSteered relays one batch from the worker's steered socket: each
// datagram by the rules of its port's channel, all accepted ones with one
// sendmmsg.
func (w *worker) serveSteered() {
	io := w.steered
	n, err := io.recv.Recv(io.fd)
	if err != nil || n == 0 {
		return
	}
	tos := uint8(kernel.DSCPExpeditedForwarding << 2)
	q := 0
	for i := range n {
		p, src, truncated := io.recv.Packet(i)
		to, ok := kernel.ParseOrigDst(io.recv.Control(i))
		var in *side
		if ok {
			in = w.m.ports.lookup(int(to.Port()))
		}
		if in == nil {
			w.m.unrouted.Add(1) // a port of the range no channel holds
			if ok {
				w.m.guard.report(src.Addr(), uint32(to.Port()))
			}
			continue
		}
		c := in.ch
		c.mu.RLock()
		if !c.closed {
			out := &c.legs[in.leg].sides[1-in.side]
			dst := out.latched.Load()
			now := int64(time.Since(c.created))
			if c.forwardable(in, src, p, truncated, now, dst) {
				from := w.m.cfg.Listen
				if from.IsUnspecified() {
					from = to.Addr() // the address the party used
				}
				dir := Direction(in.side)
				if io.send.Add(netip.AddrPortFrom(from, uint16(out.port)), *dst, tos, p) {
					c.stats.packets[dir].Add(1)
					c.stats.bytes[dir].Add(uint64(len(p)))
					io.queued[q] = queuedDatagram{c: c, dir: dir, n: len(p), now: now}
					q++
				} else {
					c.stats.dropped[DropSendError].Add(1) // an IPv6 peer
				}
			}
		}
		c.mu.RUnlock()
	}
	if q == 0 {
		return
	}
	sent, _ := io.send.Send(io.raw)
	for _, d := range io.queued[:sent] {
		d.c.lastForward.Store(d.now)
	}
	for _, d := range io.queued[sent:q] {
		d.c.stats.packets[d.dir].Add(^uint64(0))
		d.c.stats.bytes[d.dir].Add(^uint64(d.n - 1))
		d.c.stats.dropped[DropSendError].Add(1)
	}
	clear(io.queued[:q]) // no channel stays reachable from here
}
