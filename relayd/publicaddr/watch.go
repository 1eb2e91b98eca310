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
	// stunServers, when the host has only private addresses, are asked
	// for the NAT's public address (host:port).
	stunServers []string
	// forward names what a donor must forward on the router, for the
	// behind-NAT warning.
	forward string
	// lastWarned avoids repeating the same warning on every refresh.
	lastWarned netip.Addr
	reach      atomic.Value // Reachability of the current address
	onChange   func(netip.Addr)
	// mapped is the router's external address where it maps relayd's
	// ports (invalid while it maps none); poke asks Run to choose again
	// when it changes.
	mapped func() netip.Addr
	poke   chan struct{}
	// detect reads the interfaces (Detect; replaced in tests).
	detect func() (netip.Addr, bool, error)
}

// Reachability says who can reach the advertised address, as far as the
// relay can tell.
type Reachability string

const (
	// Configured: the operator set public_address; relayd trusts it.
	Configured Reachability = "configured"
	// Public: an interface has a public address (no NAT in the way).
	Public Reachability = "public"
	// BehindNAT: the address was learned from STUN: reachable only if the
	// router forwards the relay ports to this device.
	BehindNAT Reachability = "behind_nat"
	// PortMapped: the router maps the relay's ports (PCP, NAT-PMP or
	// UPnP) and the address is its external one.
	PortMapped Reachability = "port_mapped"
	// PrivateOnly: only private addresses and no STUN answer: only this
	// network can use the relay.
	PrivateOnly Reachability = "private_only"
	// Unknown: no usable address yet.
	Unknown Reachability = "none"
)

// Reachability of the current address.
func (w *Watcher) Reachability() Reachability {
	if w.configured {
		return Configured
	}
	if r, ok := w.reach.Load().(Reachability); ok {
		return r
	}
	return Unknown
}

// Options configure a detecting Watcher.
type Options struct {
	// STUNServers (host:port) are asked for the public address when the
	// interfaces have only private ones (the relay is behind NAT).
	STUNServers []string
	// Forward describes the ports a donor must forward to the relay
	// ("UDP ports 40000-40999 and 3478", config.Config.ForwardText), for
	// the warning.
	Forward string
	// Mapped, when set, is the router's external address while it maps
	// the relay's ports (invalid otherwise): behind NAT it is advertised
	// before any STUN answer. Call Watcher.Remap when it changes.
	Mapped func() netip.Addr
	Logger *slog.Logger
	// OnChange, when set, is called by Run with each new address (the
	// reachability check runs again).
	OnChange func(netip.Addr)
}

// NewStatic returns a Watcher that always reports addr.
func NewStatic(addr netip.Addr) *Watcher {
	w := &Watcher{configured: true, log: slog.New(slog.DiscardHandler)}
	w.current.Store(&addr)
	return w
}

// NewWatcher returns a Watcher holding the address detected now (none if
// no interface has a usable one yet); Run keeps it current.
func NewWatcher(ctx context.Context, opt Options) (*Watcher, error) {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{log: opt.Logger, stunServers: opt.STUNServers, forward: opt.Forward, onChange: opt.OnChange, mapped: opt.Mapped, poke: make(chan struct{}, 1), detect: Detect}
	if _, err := w.refresh(ctx); err != nil {
		// The network may not be up yet (a router booting, DHCP pending):
		// start without an address and take the first one that appears
		// (Run follows the interfaces). Until then channel requests are
		// refused with service-unavailable.
		w.log.Warn("no usable address yet", "err", err,
			"effect", "channel requests are refused until an interface gets an address (or set public_address)")
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

// refresh chooses again from the interface addresses (and, behind NAT,
// asks STUN servers for the public one); it reports whether the choice
// changed.
func (w *Watcher) refresh(ctx context.Context) (bool, error) {
	local, public, err := w.detect()
	if err != nil {
		return false, err
	}
	a := local
	if mapped := w.mappedAddr(); !public && mapped.IsValid() {
		w.reach.Store(PortMapped)
		return w.store(mapped), nil
	}
	if !public && len(w.stunServers) > 0 {
		mapped, server, err := MappedAddress(ctx, local, w.stunServers)
		if err != nil {
			w.log.Warn("behind NAT and no STUN server answered: advertising the private address", "address", local.String(), "err", err)
		} else {
			a, public = mapped, true
			if mapped != w.lastWarned {
				w.lastWarned = mapped
				w.log.Warn("relay is behind NAT: forward "+w.forward+" on the router to this device, or calls through it will fail",
					"local_address", local.String(), "public_address", mapped.String(), "stun_server", server)
			}
		}
	}
	switch {
	case public && a != local:
		w.reach.Store(BehindNAT)
	case public:
		w.reach.Store(Public)
	default:
		w.reach.Store(PrivateOnly)
	}
	changed := w.store(a)
	if changed && !public && a != w.lastWarned {
		w.lastWarned = a
		w.log.Warn("no public address on any interface: channels advertise a private address and only work inside this network; set public_address or stun_servers, and forward "+w.forward+" on the router",
			"address", a.String())
	}
	return changed, nil
}

// store makes a the current address and reports whether it changed.
func (w *Watcher) store(a netip.Addr) bool {
	if a == w.Current() {
		return false
	}
	w.current.Store(&a)
	return true
}

func (w *Watcher) mappedAddr() netip.Addr {
	if w.mapped == nil {
		return netip.Addr{}
	}
	return w.mapped()
}

// Remap makes Run choose again soon: the router's external address, or
// whether it maps the ports at all, changed.
func (w *Watcher) Remap() {
	if w.poke == nil {
		return // a configured address
	}
	select {
	case w.poke <- struct{}{}:
	default:
	}
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
	// The NAT's public address can change without any local change, and
	// a failed netlink watch needs a fallback: look again periodically.
	period := time.Minute
	if len(w.stunServers) > 0 {
		period = 5 * time.Minute
	}
	tick := time.NewTicker(period)
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
		case <-w.poke:
		case <-tick.C:
		}
		old := w.Current()
		changed, err := w.refresh(ctx)
		if err != nil {
			if old.IsValid() {
				w.log.Warn("public address: keeping the last one", "address", old.String(), "err", err)
			} else {
				w.log.Warn("no usable address yet", "err", err)
			}
			continue
		}
		if changed {
			w.log.Info("public address changed", "from", old.String(), "to", w.Current().String())
			if w.onChange != nil {
				w.onChange(w.Current())
			}
		}
	}
}

// String describes the watcher for logs.
func (w *Watcher) String() string {
	how := "detected"
	if w.configured {
		how = "configured"
	}
	if !w.Current().IsValid() {
		return "none yet (" + how + ")"
	}
	return fmt.Sprintf("%s (%s)", w.Current(), how)
}
