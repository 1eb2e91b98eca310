package channel

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrDraining is returned by Allocate once Drain was called: the relay is
// shutting down and takes no new channels, while live ones go on.
var ErrDraining = errors.New("relay is shutting down: no new channels")

// Drain stops taking new channels; live channels go on until they expire,
// are killed or Close is called. It cannot be undone.
func (m *Manager) Drain() {
	m.mu.Lock()
	m.draining = true
	m.mu.Unlock()
}

// Draining reports whether Drain was called.
func (m *Manager) Draining() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.draining
}

// Check proves every worker is alive: each is woken and must answer from
// its own loop before ctx is done. A worker stuck in a system call or a
// lock fails the check; an idle one (blocked in epoll_wait) passes. This
// drives the systemd watchdog, so it costs one wake-up per worker.
func (m *Manager) Check(ctx context.Context) error {
	m.checkMu.Lock()
	defer m.checkMu.Unlock()
	if m.stop.Load() {
		return errors.New("data plane stopped")
	}
	began := time.Now()
	for i, w := range m.workers {
		select {
		case <-w.pong: // a late answer to an earlier, timed-out probe
		default:
		}
		w.probe.Store(true)
		if err := w.poller.Wake(); err != nil {
			return fmt.Errorf("data plane worker %d: wake: %w", i, err)
		}
		select {
		case <-w.pong:
		case <-ctx.Done():
			return fmt.Errorf("data plane worker %d did not answer within %s: %w", i, time.Since(began).Round(time.Millisecond), context.Cause(ctx))
		}
	}
	return nil
}

// Wedge makes every worker stop serving and hang (until Close), as a
// forwarder stuck in the kernel would: packets queue and are not relayed,
// and Check fails. Only for tests of the watchdog; relayd exposes it
// behind an explicit environment switch.
func (m *Manager) Wedge() {
	m.wedged.Store(true)
	for _, w := range m.workers {
		w.poller.Wake()
	}
}
