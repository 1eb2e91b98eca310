package channel

import (
	"log/slog"
	"sync/atomic"

	"github.com/jnrelay/jnrelay/kernel"
)

// worker serves the ports of its channels from one epoll instance: one
// thread blocked in epoll_wait instead of a goroutine per socket, and no
// allocation per datagram. What it waits on and how a ready event is read
// is its transport's business (transport.go).
type worker struct {
	id     int // position among the Manager's workers
	tr     transport
	poller *kernel.Poller
	events []kernel.Event
	done   chan struct{}
	log    *slog.Logger

	probe atomic.Bool   // Check is waiting for this worker
	pong  chan struct{} // the worker's answer to a probe (capacity 1)
}

func newWorker(id int, tr transport, log *slog.Logger) (*worker, error) {
	p, err := kernel.NewPoller()
	if err != nil {
		return nil, err
	}
	w := &worker{
		id: id, tr: tr, poller: p, log: log,
		events: make([]kernel.Event, 128),
		done:   make(chan struct{}),
		pong:   make(chan struct{}, 1),
	}
	if err := tr.startWorker(w); err != nil {
		p.Close()
		return nil, err
	}
	return w, nil
}

// close releases the worker's poller and its transport's I/O.
func (w *worker) close() {
	w.poller.Close()
	w.tr.stopWorker(w)
}

// run serves ready ports until stop is set and the worker is woken. While
// wedged is set (a test hook) a woken worker hangs until closing closes.
func (w *worker) run(stop, wedged *atomic.Bool, closing <-chan struct{}) {
	defer close(w.done)
	for {
		n, err := w.poller.Wait(w.events, -1)
		if err != nil {
			w.log.Error("data plane worker stopped", "err", err)
			return
		}
		for _, ev := range w.events[:n] {
			if ev.Token != kernel.WakeToken {
				w.tr.serve(w, ev.Token)
				continue
			}
			if stop.Load() {
				return
			}
			if wedged.Load() {
				w.log.Error("data plane worker wedged on request (test hook)")
				<-closing
				return
			}
			if w.probe.CompareAndSwap(true, false) {
				select {
				case w.pong <- struct{}{}:
				default:
				}
			}
		}
	}
}
