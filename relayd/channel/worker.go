package channel

import (
	"log/slog"
	"sync/atomic"

	"github.com/jnrelay/jnrelay/kernel"
)

// batchSize is how many datagrams one system call moves. At VoIP rates a
// ready port holds one or two datagrams; a hot flow fills the batch.
const batchSize = 16

// batches are a worker's receive and send buffers, reused for every port.
type batches struct {
	recv *kernel.RecvBatch
	send *kernel.SendBatch
	lens [batchSize]int // lengths of the queued datagrams
	gso  bool           // send batches segmented (Config.GSO)
	// gsoSaved is the Manager's count of datagrams sent inside another's
	// GSO message.
	gsoSaved *atomic.Uint64
}

// worker serves the ports of its channels from one epoll instance: one
// thread blocked in epoll_wait instead of a goroutine per socket, and no
// allocation per datagram.
type worker struct {
	m      *Manager
	poller *kernel.Poller
	b      batches
	events []kernel.Event
	done   chan struct{}
	log    *slog.Logger

	probe atomic.Bool   // Check is waiting for this worker
	pong  chan struct{} // the worker's answer to a probe (capacity 1)

	steered *steeredIO // steered mode's socket and raw sender; nil otherwise
}

func newWorker(m *Manager) (*worker, error) {
	p, err := kernel.NewPoller()
	if err != nil {
		return nil, err
	}
	w := &worker{
		m: m, poller: p, log: m.log,
		b: batches{recv: kernel.NewRecvBatch(batchSize, MaxDatagram+1), send: kernel.NewSendBatch(batchSize),
			gso: m.cfg.GSO, gsoSaved: &m.gsoSaved},
		events: make([]kernel.Event, 128),
		done:   make(chan struct{}),
		pong:   make(chan struct{}, 1),
	}
	if m.cfg.Steered {
		if w.steered, err = openSteeredIO(m.cfg.Listen); err == nil {
			err = p.Add(w.steered.fd, steerToken)
		}
		if err != nil {
			w.close()
			return nil, err
		}
	}
	return w, nil
}

// close releases the worker's poller and steered sockets.
func (w *worker) close() {
	w.poller.Close()
	if w.steered != nil {
		w.steered.close()
	}
}

// token identifies a port to the poller: its number, and its socket so a
// late event for a closed socket is recognised.
func token(port int, fd int) uint64 { return uint64(uint32(port)) | uint64(uint32(fd))<<32 }

// add registers the channel's sockets with this worker (a steered channel
// has none).
func (w *worker) add(c *Channel) error {
	for _, s := range c.sides() {
		if s.fd < 0 {
			continue
		}
		if err := w.poller.Add(s.fd, token(s.port, s.fd)); err != nil {
			return err
		}
	}
	return nil
}

// run serves ready ports until stop is set and the worker is woken.
func (w *worker) run(stop *atomic.Bool) {
	defer close(w.done)
	for {
		n, err := w.poller.Wait(w.events, -1)
		if err != nil {
			w.log.Error("data plane worker stopped", "err", err)
			return
		}
		for _, ev := range w.events[:n] {
			if ev.Token == kernel.WakeToken {
				if stop.Load() {
					return
				}
				if w.m.wedged.Load() {
					w.log.Error("data plane worker wedged on request (test hook)")
					<-w.m.closing
					return
				}
				if w.probe.CompareAndSwap(true, false) {
					select {
					case w.pong <- struct{}{}:
					default:
					}
				}
				continue
			}
			if ev.Token == steerToken {
				w.serveSteered()
				continue
			}
			w.serve(ev.Token)
		}
	}
}

// serve relays what is waiting on the port behind tok.
func (w *worker) serve(tok uint64) {
	s := w.m.ports.lookup(int(uint32(tok)))
	if s == nil {
		return // the channel ended after the event was queued
	}
	c := s.ch
	c.mu.RLock()
	if !c.closed && uint32(s.fd) == uint32(tok>>32) {
		c.relay(s, &w.b)
	}
	c.mu.RUnlock()
}
