package channel

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/jnrelay/jnrelay/kernel"
)

// steeredTransport (Config.Steered) serves the whole port range from one UDP
// socket per worker instead of a socket per port: a BPF sk_lookup program
// (kernel.Steering) hands every datagram for port p to worker p mod n,
// which learns p from IP_ORIGDSTADDR, relays by the same rules as the
// per-port path, and sends from the right relay port through a raw socket
// (kernel.RawSendBatch), a whole receive batch of many channels at once.
// Channels then cost no file descriptors, so the range is not bounded by
// RLIMIT_NOFILE, and one system call pair moves datagrams of many calls.
//
// It needs Linux ≥ 5.9, an IPv4 listen address, CAP_BPF (or CAP_SYS_ADMIN),
// CAP_NET_ADMIN and CAP_NET_RAW. The nftables fast path is a per-socket
// feature and stays off; the shield is the latched source in the port's
// entry of the steering program's port map (kernel.Steering.Shield).
//
// Each port always reaches the same worker, so every side keeps a single
// writer of its latch, as in the per-port path.

// steerToken is the poller token of a worker's steered socket.
const steerToken = kernel.WakeToken - 1

// steerBatch is how many datagrams one steered receive (and send) moves:
// the socket serves every port of the worker, so batches fill up.
const steerBatch = 64

// steeredTransport serves the port range from one socket per worker.
type steeredTransport struct {
	listen netip.Addr // IPv4
	sh     *shared
	// ios are the workers' sockets, by worker id. The slice is made
	// whole up front and each worker's entry written before its loop
	// starts: a starting worker never moves the slice a running one reads.
	ios []*steeredIO

	// steerings are the attached port steering programs, one per range
	// covered.
	mu        sync.Mutex
	steerings []*kernel.Steering
}

// errSteeredFastPath refuses the nftables fast path with steered ports.
var errSteeredFastPath = errors.New("the nftables fast path (nftables, flowtable) needs a socket per port: it cannot be combined with steered ports")

func newSteeredTransport(listen netip.Addr, sh *shared, workers int) (*steeredTransport, error) {
	if !listen.Unmap().Is4() {
		return nil, fmt.Errorf("steered relay ports need an IPv4 listen address, not %s", listen)
	}
	t := &steeredTransport{listen: listen.Unmap(), sh: sh, ios: make([]*steeredIO, workers)}
	sh.shieldOps = t
	return t, nil
}

// steeredIO is one worker's steered socket and raw sender.
type steeredIO struct {
	sock, raw *kernel.Socket
	recv      *kernel.RecvBatch
	send      *kernel.RawSendBatch
	queued    [steerBatch]queuedDatagram
}

// queuedDatagram remembers what a queued datagram was counted as, to take
// it back if the kernel refuses it.
type queuedDatagram struct {
	c   *Channel
	dir Direction
	n   int
	now int64
}

func (t *steeredTransport) startWorker(w *worker) error {
	if w.id >= len(t.ios) || t.ios[w.id] != nil {
		return fmt.Errorf("worker %d started twice or beyond the %d workers", w.id, len(t.ios))
	}
	io, err := openSteeredIO(t.listen)
	if err != nil {
		return err
	}
	if err := w.poller.Add(io.sock.FD(), steerToken); err != nil {
		io.close()
		return err
	}
	t.ios[w.id] = io
	return nil
}

func openSteeredIO(listen netip.Addr) (*steeredIO, error) {
	sock, err := kernel.OpenUDP(netip.AddrPortFrom(listen, 0))
	if err != nil {
		return nil, fmt.Errorf("steered socket: %w", err)
	}
	if err := sock.EnableOrigDst(); err != nil {
		sock.Close()
		return nil, err
	}
	// One socket queues for every port of the worker.
	sock.SetBuffers(4*kernel.HotFlowBuffer, 0)
	raw, err := kernel.OpenRawSender()
	if err != nil {
		sock.Close()
		return nil, err
	}
	return &steeredIO{sock: sock, raw: raw,
		recv: kernel.NewRecvBatch(steerBatch, MaxDatagram+1).WithControl(64),
		send: kernel.NewRawSendBatch(steerBatch)}, nil
}

func (s *steeredIO) close() {
	s.sock.Close()
	s.raw.Close()
}

func (t *steeredTransport) stopWorker(w *worker) {
	if w.id < len(t.ios) && t.ios[w.id] != nil {
		t.ios[w.id].close()
	}
}

func (t *steeredTransport) socketPerPort() bool { return false }

// cover attaches steering of first..last to the workers' sockets. Earlier
// steerings stay attached, so channels of an old range keep working after
// a reconfiguration; they all map a port to the same worker.
func (t *steeredTransport) cover(first, last int) error {
	st, err := kernel.NewSteering(t.listen, first, last, len(t.ios))
	if err != nil {
		return fmt.Errorf("steered relay ports: %w", err)
	}
	for i, io := range t.ios {
		if err := st.SetSocket(i, io.sock.FD()); err != nil {
			return fmt.Errorf("steered relay ports: %w", errors.Join(err, st.Close()))
		}
	}
	t.mu.Lock()
	t.steerings = append(t.steerings, st)
	t.mu.Unlock()
	return nil
}

// stop detaches every steering program.
func (t *steeredTransport) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, st := range t.steerings {
		st.Close()
	}
	t.steerings = nil
}

// openPorts holds c's ports in the steering program, so the workers'
// sockets receive for them, once no other socket is bound there: the
// program runs before the kernel's lookup of unconnected sockets and
// would take that socket's datagrams. A port in use fails with
// EADDRINUSE, so the Manager takes another block, as it does with a
// socket per port. (A program that binds one of the ports after this
// check, while the channel lives, does not get its datagrams: the bind
// that would fail with a socket per port succeeds here.)
func (t *steeredTransport) openPorts(c *Channel) error {
	sides := c.sides()
	for _, s := range sides {
		probe, err := kernel.OpenUDP(netip.AddrPortFrom(t.listen, uint16(s.port)))
		if err != nil {
			return fmt.Errorf("steered port %d: %w", s.port, err)
		}
		probe.Close()
	}
	for i, s := range sides {
		st, err := t.steering(s.port)
		if err == nil {
			err = st.Hold(s.port)
		}
		if err != nil {
			t.release(sides[:i])
			return fmt.Errorf("steered relay ports: %w", err)
		}
	}
	return nil
}

// release stops steering the sides' ports.
func (t *steeredTransport) release(sides []*side) {
	for _, s := range sides {
		st, err := t.steering(s.port)
		if err == nil {
			err = st.Release(s.port)
		}
		if err != nil {
			t.sh.log.Warn("releasing a steered port", "port", s.port, "err", err)
		}
	}
}

// attach has nothing to register: the steering program picks the worker
// by port.
func (t *steeredTransport) attach(*worker, *Channel) error { return nil }

// closePorts credits what c's shields dropped and releases its ports:
// the ordinary lookup takes them again, and the next channel there
// starts without a shield. The caller holds c.mu for writing.
func (t *steeredTransport) closePorts(c *Channel) {
	sides := c.sides()
	for _, s := range sides {
		if s.shield.up {
			c.creditShield(s)
			s.shield.up = false
		}
	}
	t.release(sides[:])
}

// steering is the steering program that decides port's datagrams: the
// first attached that covers it (programs run in attach order, and the
// first to assign a socket wins).
func (t *steeredTransport) steering(port int) (*kernel.Steering, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, st := range t.steerings {
		if st.Covers(port) {
			return st, nil
		}
	}
	return nil, fmt.Errorf("port %d: no steering program covers it", port)
}

// raise puts src in s's entry of its steering program's port map.
func (t *steeredTransport) raise(s *side, src netip.AddrPort) (uint32, error) {
	st, err := t.steering(s.port)
	if err != nil {
		return 0, err
	}
	return 0, st.Shield(s.port, src) // a new entry counts from 0
}

func (t *steeredTransport) drops(s *side) (uint32, error) {
	st, err := t.steering(s.port)
	if err != nil {
		return 0, err
	}
	n, err := st.ShieldDrops(s.port)
	return uint32(n), err // a difference of wrapping counts is exact
}

func (t *steeredTransport) lower(s *side) error {
	st, err := t.steering(s.port)
	if err != nil {
		return err
	}
	return st.Unshield(s.port)
}

// serve relays one batch from the worker's steered socket: each datagram
// by the rules of its port's channel, all accepted ones with one sendmmsg.
func (t *steeredTransport) serve(w *worker, tok uint64) {
	if tok != steerToken {
		return
	}
	io := t.ios[w.id]
	n, err := io.recv.Recv(io.sock.FD())
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
			in = t.sh.ports.lookup(int(to.Port()))
		}
		if in == nil {
			t.sh.unrouted.Add(1) // a port of the range no channel holds
			if ok {
				t.sh.guard.report(src.Addr(), uint32(to.Port()))
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
				from := t.listen
				if from.IsUnspecified() {
					from = to.Addr() // the address the party used
				}
				dir := Direction(in.side)
				if io.send.Add(netip.AddrPortFrom(from, uint16(out.port)), *dst, tos, p) {
					c.countQueued(dir, 1, len(p))
					io.queued[q] = queuedDatagram{c: c, dir: dir, n: len(p), now: now}
					q++
				} else {
					c.countUnsendable() // an IPv6 peer
				}
			}
		}
		c.mu.RUnlock()
	}
	if q == 0 {
		return
	}
	sent, _ := io.send.Send(io.raw.FD())
	for _, d := range io.queued[:sent] {
		d.c.forwarded(d.now)
	}
	for _, d := range io.queued[sent:q] {
		d.c.countUnsent(d.dir, 1, d.n)
	}
	clear(io.queued[:q]) // no channel stays reachable from here
}
