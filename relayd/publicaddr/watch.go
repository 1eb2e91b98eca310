package publicaddr

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
)

// Watcher keeps the advertised address current: a configured address never
// changes; otherwise the choice is made again from the interface addresses
// whenever the kernel reports an address added or removed (netlink), so a
// DHCP renewal or a PPP reconnect shows in the next channel result.
type Watcher struct {
	configured bool
	current    atomic.Pointer[netip.Addr]
	log        *slog.Logger
}

// NewStatic returns a Watcher that always reports addr.
func NewStatic(addr netip.Addr) *Watcher {
	w := &Watcher{configured: true, log: slog.New(slog.DiscardHandler)}
	w.current.Store(&addr)
	return w
}

// NewWatcher returns a Watcher holding the address detected now; Run keeps
// it current.
func NewWatcher(log *slog.Logger) (*Watcher, error) {
	w := &Watcher{log: log}
	if _, err := w.refresh(); err != nil {
		return nil, err
	}
	return w, nil
}

// Current is the address to advertise (invalid if none is usable).
func (w *Watcher) Current() netip.Addr {
	if p := w.current.Load(); p != nil {
		return *p
	}
	return netip.Addr{}
}

// refresh chooses again from the interface addresses; it reports whether
// the choice changed.
func (w *Watcher) refresh() (bool, error) {
	a, public, err := Detect()
	if err != nil {
		return false, err
	}
	old := w.Current()
	if a == old {
		return false, nil
	}
	w.current.Store(&a)
	if !public {
		w.log.Warn("no public address on any interface: channels advertise a private address and only work inside this network; set public_address (and forward the relay ports on the router) to serve the Internet",
			"address", a.String())
	}
	return true, nil
}

// Run follows address changes until ctx ends. A configured address makes
// it return at once. If the netlink subscription fails it falls back to
// checking every minute.
func (w *Watcher) Run(ctx context.Context) error {
	if w.configured {
		return nil
	}
	updates := make(chan netlink.AddrUpdate, 16)
	done := make(chan struct{})
	defer close(done)
	subErr := make(chan error, 1)
	err := netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{
		ErrorCallback: func(err error) {
			select {
			case subErr <- err:
			default:
			}
		},
	})
	if err != nil {
		w.log.Warn("cannot watch interface addresses; checking every minute", "err", err)
		updates = nil
	}
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-updates:
			if !ok {
				w.log.Warn("address watch ended; checking every minute")
				updates = nil
				continue
			}
		case err := <-subErr:
			w.log.Warn("address watch error", "err", err)
			continue
		case <-tick.C:
		}
		old := w.Current()
		changed, err := w.refresh()
		if err != nil {
			w.log.Warn("public address: keeping the last one", "address", old.String(), "err", err)
			continue
		}
		if changed {
			w.log.Info("public address changed", "from", old.String(), "to", w.Current().String())
		}
	}
}

// String describes the watcher for logs.
func (w *Watcher) String() string {
	how := "detected"
	if w.configured {
		how = "configured"
	}
	return fmt.Sprintf("%s (%s)", w.Current(), how)
}
