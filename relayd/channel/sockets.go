package channel

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/jnrelay/jnrelay/kernel"
)

// socketTransport is the default transport: every relay port is a UDP
// socket of its own, registered with its channel's worker. A ready socket
// is read with one recvmmsg and what it forwards leaves with one sendmmsg
// (or one UDP GSO message per run of equal-size datagrams, Config.GSO) from
// the socket of the other side of the leg. A port that fills a whole batch
// gets larger buffers, and a flooded latched port a source filter in the
// kernel (shield.go).
type socketTransport struct {
	listen  netip.Addr
	sh      *shared
	bufSize int  // per-socket buffer size for the whole range
	gso     bool // send batches segmented (Config.GSO)
	// batches are the workers' buffers, by worker id: made whole up front
	// (a starting worker never moves the slice a running one reads).
	batches []*batches
}

// batchSize is how many datagrams one system call moves. At VoIP rates a
// ready port holds one or two datagrams; a hot flow fills the batch.
const batchSize = 16

// batches are a worker's receive and send buffers, reused for every port.
type batches struct {
	recv *kernel.RecvBatch
	send *kernel.SendBatch
	lens [batchSize]int // lengths of the queued datagrams
}

// newSocketTransport sizes every socket's buffers for a range of ports
// ports.
func newSocketTransport(listen netip.Addr, sh *shared, ports, workers int, gso bool) *socketTransport {
	sh.shieldOps = socketShields{}
	return &socketTransport{listen: listen, sh: sh, bufSize: kernel.BufferSizeFor(ports), gso: gso,
		batches: make([]*batches, workers)}
}

func (t *socketTransport) startWorker(w *worker) error {
	if w.id >= len(t.batches) || t.batches[w.id] != nil {
		return fmt.Errorf("worker %d started twice or beyond the %d workers", w.id, len(t.batches))
	}
	t.batches[w.id] = &batches{recv: kernel.NewRecvBatch(batchSize, MaxDatagram+1), send: kernel.NewSendBatch(batchSize)}
	return nil
}

func (t *socketTransport) stopWorker(*worker) {}

func (t *socketTransport) stop() {}

func (t *socketTransport) socketPerPort() bool { return true }

// cover binds nothing ahead (a channel binds its ports); it warns when the
// range cannot be held in descriptors.
func (t *socketTransport) cover(first, last int) error {
	checkFileLimit(last-first+1, t.sh.log)
	return nil
}

// checkFileLimit warns when the open-file limit cannot hold every relay
// port (plus room for the rest of the daemon). Go raises the soft limit to
// the hard limit at start, so only the hard limit matters.
func checkFileLimit(sockets int, log *slog.Logger) {
	limit, err := kernel.OpenFileLimit()
	if err != nil {
		return
	}
	if need := uint64(sockets) + 256; limit < need {
		log.Warn("open-file limit below what the port range needs: channels will fail to allocate before the pool is full; raise LimitNOFILE / ulimit -n",
			"limit", limit, "needed", need)
	}
}

// openPorts binds the four ports, marks them for expedited forwarding
// (DSCP EF, as voice should be) and sizes their buffers for the range. On
// failure nothing stays open.
func (t *socketTransport) openPorts(c *Channel) error {
	for _, sd := range c.sides() {
		sock, err := kernel.OpenUDP(netip.AddrPortFrom(t.listen, uint16(sd.port)))
		if err != nil {
			t.closeSockets(c)
			return fmt.Errorf("bind relay port %d: %w", sd.port, err)
		}
		sd.sock = sock
		// Both are best effort: a relay without them still relays.
		sock.SetDSCP(t.listen.Is6() && !t.listen.Is4In6(), kernel.DSCPExpeditedForwarding)
		if t.bufSize > 0 {
			sock.SetBuffers(t.bufSize, t.bufSize)
		}
	}
	return nil
}

// token identifies a port to the poller: its number, and its socket so a
// late event for a closed socket is recognised.
func token(port int, fd int) uint64 { return uint64(uint32(port)) | uint64(uint32(fd))<<32 }

func (t *socketTransport) attach(w *worker, c *Channel) error {
	for _, s := range c.sides() {
		if err := w.poller.Add(s.sock.FD(), token(s.port, s.sock.FD())); err != nil {
			return err
		}
	}
	return nil
}

// closePorts reads what the kernel dropped on the sockets — datagrams it
// could not queue (receive buffer full) and those a shield rejected —
// before they close, which also takes them out of the worker's poller.
func (t *socketTransport) closePorts(c *Channel) {
	for _, s := range c.sides() {
		if s.sock == nil {
			continue
		}
		if s.shield.up {
			c.creditShield(s)
		}
		if n, err := s.sock.Drops(); err == nil {
			c.stats.kernelDrops.Add(uint64(n - s.shield.credited))
		}
	}
	t.closeSockets(c)
}

// socketShields raise a port's shield as a classic BPF filter on its
// own socket.
type socketShields struct{}

func (socketShields) raise(s *side, src netip.AddrPort) (uint32, error) {
	drops, err := s.sock.Drops()
	if err != nil {
		return 0, err
	}
	return drops, s.sock.AttachSourceFilter(src)
}

func (socketShields) drops(s *side) (uint32, error) { return s.sock.Drops() }

func (socketShields) lower(s *side) error { return s.sock.DetachFilter() }

func (t *socketTransport) closeSockets(c *Channel) {
	for _, s := range c.sides() {
		if s.sock != nil {
			s.sock.Close()
		}
	}
}

// serve relays what is waiting on the port behind tok.
func (t *socketTransport) serve(w *worker, tok uint64) {
	s := t.sh.ports.lookup(int(uint32(tok)))
	if s == nil {
		return // the channel ended after the event was queued
	}
	c := s.ch
	c.mu.RLock()
	if !c.closed && uint32(s.sock.FD()) == uint32(tok>>32) {
		t.relay(c, s, t.batches[w.id])
	}
	c.mu.RUnlock()
}

// relay reads the datagrams waiting on in (one recvmmsg batch) and
// forwards those the rules accept to the party latched on the other side
// of the leg (one sendmmsg). The caller holds c.mu for reading and checked
// that the channel is open.
func (t *socketTransport) relay(c *Channel, in *side, b *batches) {
	n, err := b.recv.Recv(in.sock.FD())
	if err != nil || n == 0 {
		// A pending socket error (an ICMP unreachable from a peer) is
		// consumed by the failed read; the port stays usable.
		return
	}
	out := &c.legs[in.leg].sides[1-in.side]
	if n == b.recv.Size() && !in.hot {
		t.growBuffers(c, in, out)
	}
	dir := Direction(in.side)
	now := int64(time.Since(c.created))
	dst := out.latched.Load() // only this worker latches out: stable for the batch
	if dst != nil {
		b.send.Reset(*dst)
	}
	var queuedBytes int
	for i := range n {
		p, src, truncated := b.recv.Packet(i)
		if !c.forwardable(in, src, p, truncated, now, dst) {
			continue
		}
		b.lens[b.send.Len()] = len(p)
		b.send.Add(p)
		queuedBytes += len(p)
	}
	queued := b.send.Len()
	if queued == 0 {
		return
	}
	c.countQueued(dir, queued, queuedBytes)
	var sent int
	if t.gso && queued > 1 && !out.noGSO {
		// A hot flow: the batch's equal-size runs cross the UDP and IP
		// layers once each.
		var msgs int
		var err error
		sent, msgs, err = b.send.SendSegmented(out.sock.FD())
		if errors.Is(err, kernel.ErrNoSegmentation) {
			out.noGSO = true // this destination's route cannot take it: stop asking
		}
		if sent > msgs {
			t.sh.segmented.Add(uint64(sent - msgs))
		}
	} else {
		sent, _ = b.send.Send(out.sock.FD())
	}
	if sent < queued {
		unsent := 0
		for _, l := range b.lens[sent:queued] {
			unsent += l
		}
		c.countUnsent(dir, queued-sent, unsent)
	}
	if sent > 0 {
		c.forwarded(now)
	}
}

// growBuffers gives a port that filled a whole receive batch, and the port
// it forwards from, buffers for a hot flow: the range-wide size (as small
// as 64 KiB for a large range) overflows in a burst of such a flow while
// the relay serves other ports. Best effort, once per port.
func (t *socketTransport) growBuffers(c *Channel, in, out *side) {
	in.hot = true
	rcv, _, err1 := in.sock.SetBuffers(kernel.HotFlowBuffer, 0)
	_, snd, err2 := out.sock.SetBuffers(0, kernel.HotFlowBuffer)
	t.sh.log.Debug("hot flow: port buffers grown", "channel", c.info.ID, "port", in.port,
		"rcvbuf", rcv, "out_port", out.port, "sndbuf", snd, "err", errors.Join(err1, err2))
}
