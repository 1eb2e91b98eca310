// Package daemon assembles relayd from its parts — data plane, protocol
// layer, XMPP sessions, tracker, STUN server, public address — runs them,
// applies new configurations live, and reports status. The command in
// relayd/main.go and the provisioning API drive it.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/jnrelay/jnrelay/kernel"
	"github.com/jnrelay/jnrelay/relayd/channel"
	"github.com/jnrelay/jnrelay/relayd/config"
	"github.com/jnrelay/jnrelay/relayd/jinglenodes"
	"github.com/jnrelay/jnrelay/relayd/publicaddr"
	"github.com/jnrelay/jnrelay/relayd/stun"
	"github.com/jnrelay/jnrelay/relayd/tracker"
	"github.com/jnrelay/jnrelay/relayd/usage"
	"github.com/jnrelay/jnrelay/relayd/xmppsession"
)

// ApplyTimeout bounds how long new or changed XMPP services may take to
// come online before Apply rolls the whole configuration back.
const ApplyTimeout = 20 * time.Second

// Daemon is a running relay.
type Daemon struct {
	version string
	log     *slog.Logger
	started time.Time
	listen  netip.Addr

	// ctx lives as long as the daemon; parts started by Apply derive from
	// it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	dp          *channel.Manager
	svc         *jinglenodes.Service
	meter       *usage.Meter
	maxChannels atomic.Int64 // limits.max_channels (0 = the port range)

	host     atomic.Pointer[publicaddr.Watcher]
	external atomic.Pointer[jinglenodes.External]
	trk      atomic.Pointer[tracker.Tracker]
	stunSrv  atomic.Pointer[stun.Server]

	applyMu sync.Mutex // one Apply at a time
	mu      sync.Mutex // guards the fields below
	cfg     config.Config
	parts   map[string]*part // running sessions by name, plus "tracker", "stun", "publicaddr"
	order   []string         // session names in configuration order
}

// part is something the daemon started and can stop on its own.
type part struct {
	cancel  context.CancelFunc
	done    chan struct{}
	session *xmppsession.Session
	service config.Service
}

func (p *part) stop() {
	p.cancel()
	<-p.done
}

// Options are what the daemon needs besides its configuration.
type Options struct {
	Logger  *slog.Logger
	Version string
	// StateDir keeps state across restarts (usage counts); "" keeps
	// nothing.
	StateDir string
}

// usageSampleEvery is how often the usage meter adds up the data plane's
// traffic (quotas take effect within this).
const usageSampleEvery = 2 * time.Second

// New builds and starts a relay from cfg. It returns once everything is
// started (XMPP sessions connect in the background).
func New(ctx context.Context, cfg config.Config, opt Options) (*Daemon, error) {
	log, version := opt.Logger, opt.Version
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d := &Daemon{version: version, log: log, started: time.Now(), ctx: ctx, cancel: cancel,
		listen: netip.MustParseAddr(cfg.ListenAddress), parts: map[string]*part{}}
	var err error
	features := kernel.Detect()
	d.dp, err = channel.New(channel.Config{
		Listen: d.listen,
		Settings: channel.Settings{PortMin: cfg.Ports.Min, PortMax: cfg.Ports.Max,
			Expire: cfg.Channel.Expire(), LatchGrace: cfg.Channel.LatchGrace(), MaxKbps: cfg.Channel.MaxKbps, TotalKbps: cfg.Limits.TotalKbps,
			FastPath: channel.FastPathMode(cfg.Channel.FastPath),
			MaxPPS:   cfg.Channel.MaxPPS, AllowPeers: cfg.Channel.AllowedPeers(), SprayThreshold: cfg.Channel.SprayerChannels},
		Steered: cfg.Channel.Steered(),
		GSO:     features.GSO,
		PublicAddr: func() netip.Addr {
			if w := d.host.Load(); w != nil {
				return w.Current()
			}
			return netip.Addr{}
		},
		Logger: log.With("part", "dataplane"),
		OnEnd:  func(e channel.End) { d.svc.ChannelEnded(context.WithoutCancel(ctx), e) },
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("data plane: %w", err)
	}
	d.external.Store(&jinglenodes.External{})
	d.svc = jinglenodes.New(jinglenodes.Config{
		Allocator:  d.dp,
		PublicHost: func() netip.Addr { return d.host.Load().Current() },
		Name:       "jnrelay " + version,
		Listings:   d.listings,
		External:   func() jinglenodes.External { return *d.external.Load() },
		Accepting:  func() bool { return !d.dp.Draining() },
		Admit:      d.admit,
		Logger:     log.With("part", "jinglenodes"),
	})
	d.meter = usage.Open(opt.StateDir, 0, usage.Options{Logger: log.With("part", "usage")})
	d.wg.Add(1)
	go d.sampleUsage()
	log.LogAttrs(ctx, slog.LevelInfo, "kernel features", features.LogAttrs()...)
	if err := d.apply(cfg, config.Config{}); err != nil {
		d.Close()
		return nil, err
	}
	log.Info("relayd started", "version", version, "public_address", d.host.Load().String(), "listen_address", d.listen.String(),
		"ports", fmt.Sprintf("%d-%d", cfg.Ports.Min, cfg.Ports.Max), "capacity", d.dp.Capacity(),
		"channels_per_domain", domainChannels(cfg.Limits, d.dp.Capacity()), "xmpp_services", len(cfg.XMPP))
	if len(cfg.XMPP) == 0 {
		log.Warn("no XMPP service configured: nobody can ask this relay for a channel yet; set one up on the web page, through the API or with `relayd config set`")
	}
	return d, nil
}

// Config returns the configuration in force.
func (d *Daemon) Config() config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// Apply switches to cfg without dropping any call: the data plane keeps
// every live channel, unchanged XMPP sessions stay connected, and only
// what changed is restarted. If a new or changed XMPP service does not
// come online within ApplyTimeout, the previous configuration is restored
// and the error says which service failed and why.
func (d *Daemon) Apply(ctx context.Context, cfg config.Config) error {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	if err := cfg.Validate(); err != nil {
		return err
	}
	old := d.Config()
	if cfg.ListenAddress != old.ListenAddress {
		return fmt.Errorf("listen_address: changing it needs a restart of relayd")
	}
	if cfg.Channel.Steered() != old.Channel.Steered() {
		return fmt.Errorf("channel.sockets: changing it needs a restart of relayd")
	}
	if err := d.apply(cfg, old); err != nil {
		d.log.Warn("new configuration failed, restoring the previous one", "err", err)
		if rerr := d.apply(old, cfg); rerr != nil {
			return errors.Join(err, fmt.Errorf("restore previous configuration: %w", rerr))
		}
		return err
	}
	if err := d.waitOnline(ctx, cfg, old); err != nil {
		d.log.Warn("new configuration did not come up, restoring the previous one", "err", err)
		if rerr := d.apply(old, cfg); rerr != nil {
			return errors.Join(err, fmt.Errorf("restore previous configuration: %w", rerr))
		}
		return err
	}
	d.log.Info("configuration applied")
	return nil
}

// apply moves the running relay from config old (zero at start) to cfg.
func (d *Daemon) apply(cfg, old config.Config) error {
	first := d.host.Load() == nil
	if !first {
		if err := d.dp.Reconfigure(channel.Settings{PortMin: cfg.Ports.Min, PortMax: cfg.Ports.Max,
			Expire: cfg.Channel.Expire(), LatchGrace: cfg.Channel.LatchGrace(), MaxKbps: cfg.Channel.MaxKbps, TotalKbps: cfg.Limits.TotalKbps,
			FastPath: channel.FastPathMode(cfg.Channel.FastPath),
			MaxPPS:   cfg.Channel.MaxPPS, AllowPeers: cfg.Channel.AllowedPeers(), SprayThreshold: cfg.Channel.SprayerChannels}); err != nil {
			return fmt.Errorf("data plane: %w", err)
		}
	}
	if first || cfg.PublicAddress != old.PublicAddress || !reflect.DeepEqual(cfg.PublicAddressSTUN, old.PublicAddressSTUN) ||
		cfg.Ports != old.Ports || cfg.STUN != old.STUN {
		if err := d.startPublicAddr(cfg); err != nil {
			return err
		}
	}
	if first || cfg.STUN != old.STUN || cfg.TURN != old.TURN {
		if err := d.startSTUN(cfg); err != nil {
			return err
		}
	}
	d.applySessions(cfg)
	// The tracker finds online sessions and the relay's own addresses
	// through the daemon at each crawl: session changes need no restart.
	if first || !reflect.DeepEqual(cfg.Tracker, old.Tracker) {
		if err := d.startTracker(cfg.Tracker); err != nil {
			return err
		}
	}
	d.meter.SetQuota(usage.Quota{DailyBytes: cfg.Limits.DailyQuotaBytes(), MonthlyBytes: cfg.Limits.MonthlyQuotaBytes()})
	d.meter.SetFlushInterval(time.Duration(cfg.Limits.UsageSaveSeconds) * time.Second)
	d.svc.SetJIDLimits(jinglenodes.JIDLimits{Channels: cfg.Limits.PerJIDChannels, RequestsPerMinute: cfg.Limits.PerJIDRequestsPerMinute,
		DomainChannels: domainChannels(cfg.Limits, d.dp.Capacity())})
	d.maxChannels.Store(int64(cfg.Limits.MaxChannels))
	d.mu.Lock()
	d.cfg = cfg
	d.mu.Unlock()
	return nil
}

// run starts f as a part named name, replacing (and stopping) any part of
// that name.
func (d *Daemon) run(name string, p *part, f func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(d.ctx)
	p.cancel, p.done = cancel, make(chan struct{})
	d.mu.Lock()
	prev := d.parts[name]
	d.parts[name] = p
	d.mu.Unlock()
	if prev != nil {
		prev.stop()
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer close(p.done)
		f(ctx)
	}()
}

func (d *Daemon) startPublicAddr(cfg config.Config) error {
	var w *publicaddr.Watcher
	if cfg.PublicAddress != "" {
		w = publicaddr.NewStatic(netip.MustParseAddr(cfg.PublicAddress)) // validated by config
	} else {
		forward := fmt.Sprintf("UDP ports %d-%d", cfg.Ports.Min, cfg.Ports.Max)
		if cfg.STUN.Enabled {
			forward += fmt.Sprintf(" and %d", cfg.STUN.Port)
		}
		var err error
		w, err = publicaddr.NewWatcher(d.ctx, publicaddr.Options{STUNServers: cfg.PublicAddressSTUN, Forward: forward,
			Logger: d.log.With("part", "publicaddr")})
		if err != nil {
			return fmt.Errorf("public address: %w", err)
		}
	}
	d.host.Store(w)
	d.run("publicaddr", &part{}, func(ctx context.Context) { w.Run(ctx) })
	return nil
}

func (d *Daemon) startSTUN(cfg config.Config) error {
	ext := &jinglenodes.External{}
	if cfg.TURN.Host != "" {
		secret, err := cfg.TURN.ResolveSecret(cfg.Path)
		if err != nil {
			return err
		}
		ext.TURN = &jinglenodes.TURN{Host: cfg.TURN.Host, Port: cfg.TURN.Port, Transport: cfg.TURN.Transport,
			Secret: []byte(secret), TTL: time.Duration(cfg.TURN.TTLSeconds) * time.Second}
	}
	d.mu.Lock()
	prev := d.parts["stun"]
	delete(d.parts, "stun")
	d.mu.Unlock()
	if prev != nil {
		prev.stop() // frees the port before the new server binds it
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
			d.run("stun", &part{}, func(ctx context.Context) { srv.Serve(ctx) })
		}
	}
	d.external.Store(ext)
	return nil
}

// applySessions stops removed and changed sessions and starts new and
// changed ones.
func (d *Daemon) applySessions(cfg config.Config) {
	wanted := map[string]config.Service{}
	var order []string
	for _, s := range cfg.XMPP {
		wanted[s.Name] = s
		order = append(order, s.Name)
	}
	d.mu.Lock()
	var stale []*part
	for name, p := range d.parts {
		if p.session == nil {
			continue
		}
		if s, ok := wanted[name]; !ok || !reflect.DeepEqual(s, p.service) {
			stale = append(stale, p)
			delete(d.parts, name)
		}
	}
	d.order = order
	d.mu.Unlock()
	for _, p := range stale {
		p.stop()
	}
	for _, name := range order {
		d.mu.Lock()
		_, running := d.parts[name]
		d.mu.Unlock()
		if running {
			continue
		}
		sess, err := d.newSession(cfg, wanted[name])
		if err != nil {
			// Validation has checked everything that can be; what is left
			// (an unreadable secret file) shows in the session's status.
			d.log.Error("xmpp service not started", "session", name, "err", err)
			continue
		}
		d.run(name, &part{session: sess, service: wanted[name]}, func(ctx context.Context) { sess.Run(ctx) })
	}
}

func (d *Daemon) newSession(cfg config.Config, s config.Service) (*xmppsession.Session, error) {
	secret, err := s.ResolveSecret(cfg.Path)
	if err != nil {
		return nil, err
	}
	policy, err := newPolicy(s)
	if err != nil {
		return nil, err
	}
	backoff := xmppsession.Backoff{Min: cfg.Reconnect.Min(), Max: cfg.Reconnect.Max()}
	log := d.log.With("part", "xmpp", "server", s.Server)
	switch s.Type {
	case "component":
		domain, err := jid.Parse(s.Domain)
		if err != nil {
			return nil, fmt.Errorf("xmpp service %s: domain: %w", s.Name, err)
		}
		sess := xmppsession.NewComponent(xmppsession.ComponentConfig{Name: s.Name, Server: s.Server, Domain: domain,
			Secret: secret, Backoff: backoff, Logger: log})
		sess.SetHandler(d.svc.Handler(sess, policy))
		return sess, nil
	case "client":
		account, err := jid.Parse(s.JID)
		if err != nil {
			return nil, fmt.Errorf("xmpp service %s: jid: %w", s.Name, err)
		}
		roots, err := s.ResolveCA(cfg.Path)
		if err != nil {
			return nil, err
		}
		sess, err := xmppsession.NewClient(xmppsession.ClientConfig{Name: s.Name, JID: account, Password: secret,
			Server: s.Server, DirectTLS: s.TLS == "direct", RootCAs: roots, AllowPlain: s.AllowPlain, Backoff: backoff, Logger: log})
		if err != nil {
			return nil, err
		}
		h := d.svc.Handler(sess, policy)
		sess.SetHandler(h)
		sess.SetOnOnline(h.OnOnline)
		return sess, nil
	}
	return nil, fmt.Errorf("xmpp service %s: unknown type %q", s.Name, s.Type)
}

// newPolicy builds a service's request policy from its configuration.
func newPolicy(s config.Service) (*jinglenodes.Policy, error) {
	allow, err := jinglenodes.ParseJIDList(s.Allow)
	if err != nil {
		return nil, fmt.Errorf("xmpp service %s: allow: %w", s.Name, err)
	}
	deny, err := jinglenodes.ParseJIDList(s.Deny)
	if err != nil {
		return nil, fmt.Errorf("xmpp service %s: deny: %w", s.Name, err)
	}
	p := &jinglenodes.Policy{Allow: allow, Deny: deny}
	if s.Policy == "roster" {
		p.RosterOnly, p.Roster = true, jinglenodes.NewRoster()
	}
	return p, nil
}

// waitOnline waits until every service that is new or changed in cfg
// (compared with old) is online, or fails naming those that are not.
func (d *Daemon) waitOnline(ctx context.Context, cfg, old config.Config) error {
	before := map[string]config.Service{}
	for _, s := range old.XMPP {
		before[s.Name] = s
	}
	var watch []string
	for _, s := range cfg.XMPP {
		if prev, ok := before[s.Name]; !ok || !reflect.DeepEqual(prev, s) {
			watch = append(watch, s.Name)
		}
	}
	if len(watch) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, ApplyTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var down []error
		for _, name := range watch {
			st, ok := d.sessionStatus(name)
			if !ok || st.State != xmppsession.StateOnline {
				down = append(down, fmt.Errorf("xmpp service %s: %s (last error: %s)", name, st.State, st.LastError))
			}
		}
		if len(down) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not online after %s: %w", ApplyTimeout, errors.Join(down...))
		case <-tick.C:
		}
	}
}

func (d *Daemon) sessionStatus(name string) (xmppsession.Status, bool) {
	d.mu.Lock()
	p := d.parts[name]
	d.mu.Unlock()
	if p == nil || p.session == nil {
		return xmppsession.Status{Name: name, State: xmppsession.StateStopped}, false
	}
	return p.session.Status(), true
}

// sessions returns the running sessions in configuration order.
func (d *Daemon) sessions() []*xmppsession.Session {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*xmppsession.Session
	for _, name := range d.order {
		if p := d.parts[name]; p != nil && p.session != nil {
			out = append(out, p.session)
		}
	}
	return out
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
		Querier: func() tracker.Querier {
			for _, s := range d.sessions() {
				if s.Status().State == xmppsession.StateOnline {
					return s
				}
			}
			return nil
		},
		Self: func() []jid.JID {
			var out []jid.JID
			for _, s := range d.sessions() {
				out = append(out, s.Addr())
			}
			return out
		},
	})
	d.trk.Store(trk)
	d.run("tracker", &part{}, func(ctx context.Context) { trk.Run(ctx) })
	return nil
}

// listings is what <services/> lists besides the relay itself.
func (d *Daemon) listings() []jinglenodes.Listing {
	trk := d.trk.Load()
	if trk == nil {
		return nil
	}
	var out []jinglenodes.Listing
	for _, t := range trk.Trackers() {
		out = append(out, jinglenodes.Listing{Kind: "tracker", Address: t.String()})
	}
	for _, r := range trk.Healthy() {
		out = append(out, jinglenodes.Listing{Kind: "relay", Address: r.Address, Protocol: r.Protocol})
	}
	return out
}

// Close ends every channel (requesters hear of it while sessions are still
// up), then stops everything else.
func (d *Daemon) Close() {
	d.log.Info("shutting down")
	d.dp.Close()
	d.cancel()
	d.wg.Wait()
	d.meter.Sample(d.relayedBytes())
	if err := d.meter.Flush(); err != nil {
		d.log.Error("usage counts not saved at shutdown", "err", err)
	}
	tot := d.dp.Totals()
	d.log.Info("relayd stopped", "packets_local_to_remote", tot.Stats.Packets[channel.LocalToRemote],
		"packets_remote_to_local", tot.Stats.Packets[channel.RemoteToLocal], "dropped", tot.Stats.TotalDropped())
}

// relayedBytes is everything the data plane relayed since start, both
// directions.
func (d *Daemon) relayedBytes() uint64 {
	st := d.dp.Totals().Stats
	return st.Bytes[channel.LocalToRemote] + st.Bytes[channel.RemoteToLocal]
}

// sampleUsage feeds the usage meter until the daemon stops.
func (d *Daemon) sampleUsage() {
	defer d.wg.Done()
	t := time.NewTicker(usageSampleEvery)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
			d.meter.Sample(d.relayedBytes())
		}
	}
}

// domainChannels is the most live channels the requesters of one domain
// may hold together (0 = no limit): limits.max_channels_per_domain, or by
// default a quarter of what the relay carries (the port range's channels,
// or limits.max_channels if smaller), at least 1.
func domainChannels(l config.Limits, capacity int) int {
	switch {
	case l.MaxChannelsPerDomain > 0:
		return l.MaxChannelsPerDomain
	case l.MaxChannelsPerDomain < 0:
		return 0
	}
	if l.MaxChannels > 0 && l.MaxChannels < capacity {
		capacity = l.MaxChannels
	}
	return max(1, capacity/defaultDomainShare)
}

// defaultDomainShare: by default one domain may hold 1/defaultDomainShare
// of the relay's channels.
const defaultDomainShare = 4

// admit applies the relay-wide donor limits to a channel request: the
// data quotas and limits.max_channels.
func (d *Daemon) admit() error {
	if err := d.meter.Exhausted(); err != nil {
		return err
	}
	if n := d.maxChannels.Load(); n > 0 && int64(d.dp.Active()) >= n {
		return fmt.Errorf("the relay carries its maximum of %d calls", n)
	}
	return nil
}
