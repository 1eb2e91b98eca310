package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/jinglenodes"
	"github.com/jnrelay/jnrelay/relayd/publicaddr"
	"github.com/jnrelay/jnrelay/relayd/stun"
	"github.com/jnrelay/jnrelay/relayd/tracker"
)

// part is something the daemon started and can stop on its own.
type part struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (p *part) stop() {
	p.cancel()
	<-p.done
}

// start runs f in a part of its own, under the daemon's context.
func (d *Daemon) start(f func(ctx context.Context)) *part {
	ctx, cancel := context.WithCancel(d.ctx)
	p := &part{cancel: cancel, done: make(chan struct{})}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer close(p.done)
		f(ctx)
	}()
	return p
}

// systemPart names one of the daemon's own parts. They are kept apart
// from the XMPP sessions, which are known by the names the configuration
// gives them: a service may be called "stun" without touching the STUN
// server.
type systemPart int

const (
	partPublicAddr systemPart = iota
	partSTUN
	partTracker
	partTURN
	partDirectory
	partReachability
	partPortMap
	numSystemParts
)

func (k systemPart) String() string {
	switch k {
	case partPublicAddr:
		return "publicaddr"
	case partSTUN:
		return "stun"
	case partTracker:
		return "tracker"
	case partTURN:
		return "turn"
	case partDirectory:
		return "directory"
	case partReachability:
		return "reachability"
	case partPortMap:
		return "portmap"
	}
	return fmt.Sprintf("systemPart(%d)", int(k))
}

// runSystem starts f as the system part k, once the part it replaces has
// stopped.
func (d *Daemon) runSystem(k systemPart, f func(ctx context.Context)) {
	d.stopSystem(k)
	p := d.start(f)
	d.mu.Lock()
	d.system[k] = p
	d.mu.Unlock()
}

// stopSystem stops the system part k, if it runs, and waits for it.
func (d *Daemon) stopSystem(k systemPart) {
	d.mu.Lock()
	prev := d.system[k]
	d.system[k] = nil
	d.mu.Unlock()
	if prev != nil {
		prev.stop()
	}
}

// systemRunning reports whether the system part k runs (for tests and
// status).
func (d *Daemon) systemRunning(k systemPart) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.system[k] != nil
}

func (d *Daemon) startPublicAddr(cfg config.Config) error {
	var w *publicaddr.Watcher
	if cfg.PublicAddress != "" {
		w = publicaddr.NewStatic(netip.MustParseAddr(cfg.PublicAddress)) // validated by config
	} else {
		var err error
		w, err = publicaddr.NewWatcher(d.ctx, publicaddr.Options{STUNServers: cfg.PublicAddressSTUN, Forward: cfg.ForwardText(),
			Mapped: d.mappedExternal, Logger: d.log.With("part", "publicaddr"), OnChange: func(netip.Addr) { d.recheckReachability() }})
		if err != nil {
			return fmt.Errorf("public address: %w", err)
		}
	}
	var v6 netip.Addr
	if cfg.PublicAddress6 != "" {
		v6 = netip.MustParseAddr(cfg.PublicAddress6) // validated by config
	}
	d.host6.Store(publicaddr.NewIPv6(v6))
	d.host.Store(w)
	d.runSystem(partPublicAddr, func(ctx context.Context) { w.Run(ctx) })
	return nil
}

func (d *Daemon) startSTUN(cfg config.Config) error {
	d.stopTURN() // its port may be the old STUN port
	ext := &jinglenodes.External{}
	if cfg.TURN.Host != "" {
		secret, err := cfg.TURN.ResolveSecret(cfg.Path)
		if err != nil {
			return err
		}
		ext.TURN = &jinglenodes.TURN{Host: cfg.TURN.Host, Port: cfg.TURN.Port, Transport: string(cfg.TURN.Transport),
			Secret: []byte(secret), TTL: time.Duration(cfg.TURN.TTLSeconds) * time.Second}
	}
	if d.systemRunning(partSTUN) {
		d.stopSystem(partSTUN) // frees the port before the new server binds it
		d.stunSrv.Store(nil)
	}
	if cfg.STUN.Enabled {
		srv, err := stun.New(stun.Config{Listen: netip.AddrPortFrom(d.listen, uint16(cfg.STUN.Port)), Classic: cfg.STUN.Classic,
			MaxResponsesPerSecond: cfg.STUN.MaxResponsesPerSecond, Software: "jnrelay", Logger: d.log.With("part", "stun")})
		if err != nil {
			// The relay is still useful without STUN: say so and go on.
			d.log.Error("STUN server not started", "err", err)
		} else {
			ext.STUNPort = cfg.STUN.Port
			d.stunSrv.Store(srv)
			d.runSystem(partSTUN, func(ctx context.Context) { srv.Serve(ctx) })
		}
	}
	if cfg.TURN.Builtin.Enabled {
		t, err := d.startTURN(cfg)
		if err != nil {
			// As with STUN: the relay is still useful without it; it is
			// not announced.
			d.log.Error("TURN server not started", "err", err)
		} else {
			ext.TURN = t
		}
	}
	d.external.Store(ext)
	return nil
}

func (d *Daemon) startTracker(c config.Tracker) error {
	trackers, err := jinglenodes.ParseJIDList(c.Trackers)
	if err != nil {
		return fmt.Errorf("tracker.trackers: %w", err)
	}
	domains, err := jinglenodes.ParseJIDList(c.DiscoverDomains)
	if err != nil {
		return fmt.Errorf("tracker.discover_domains: %w", err)
	}
	trk := tracker.New(tracker.Config{
		Trackers: trackers, Domains: domains, Refresh: c.Refresh(), Logger: d.log.With("part", "tracker"),
		Querier: d.onlineQuerier,
		Self:    d.sessionAddrs,
	})
	d.trk.Store(trk)
	d.runSystem(partTracker, func(ctx context.Context) { trk.Run(ctx) })
	return nil
}

// listings is what <services/> lists besides the relay itself: the
// trackers, the relays the crawl found healthy, then the directories'.
func (d *Daemon) listings() []jinglenodes.Listing {
	var out []jinglenodes.Listing
	if trk := d.trk.Load(); trk != nil {
		for _, t := range trk.Trackers() {
			out = append(out, jinglenodes.Listing{Kind: jinglenodes.ListingTracker, Address: t.String()})
		}
		for _, r := range trk.Healthy() {
			out = append(out, jinglenodes.Listing{Kind: jinglenodes.ListingRelay, Address: r.Address, Protocol: r.Protocol})
		}
	}
	return d.directoryListings(out)
}
