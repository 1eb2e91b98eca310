// Package daemon assembles relayd from its parts — data plane, protocol
// layer, XMPP sessions, tracker, STUN server, public address — runs them,
// applies new configurations live, and reports status. The command in
// relayd/main.go and the provisioning API drive it.
package daemon

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/kernel"
	"github.com/jnrelay/jnrelay/relayd/admission"
	"github.com/jnrelay/jnrelay/relayd/channel"
	"github.com/jnrelay/jnrelay/relayd/directory"
	"github.com/jnrelay/jnrelay/relayd/jinglenodes"
	"github.com/jnrelay/jnrelay/relayd/portmap"
	"github.com/jnrelay/jnrelay/relayd/publicaddr"
	"github.com/jnrelay/jnrelay/relayd/reachability"
	"github.com/jnrelay/jnrelay/relayd/stun"
	"github.com/jnrelay/jnrelay/relayd/tracker"
	"github.com/jnrelay/jnrelay/relayd/turn"
	"github.com/jnrelay/jnrelay/relayd/usage"
)

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

	dp    *channel.Manager
	svc   *jinglenodes.Service
	gate  *admission.Gate
	meter *usage.Meter
	live  *usage.Live // calls live at once, per minute of the last hour

	host     atomic.Pointer[publicaddr.Watcher]
	host6    atomic.Pointer[publicaddr.IPv6] // the built-in TURN server's IPv6 host
	external atomic.Pointer[jinglenodes.External]
	trk      atomic.Pointer[tracker.Tracker]
	// The relay directories published to and read (nil when none).
	dirPublisher atomic.Pointer[directory.Publisher]
	dirReader    atomic.Pointer[directory.Reader]
	stunSrv      atomic.Pointer[stun.Server]
	reach        atomic.Pointer[reachability.Checker]
	turnSrv      atomic.Pointer[turn.Server]
	// turnEnded is what stopped TURN servers relayed (for the usage
	// meter); it also swaps turnSrv out when one stops.
	turnEnded turnTally
	// The router's port mappings (nil when port mapping is off) and its
	// last state, which narrows the data plane's range.
	mapper atomic.Pointer[portmap.Mapper]
	mapped atomic.Pointer[portmap.State]
	// dpMu orders the data plane's reconfigurations (Apply's and the
	// mapper's); dpCfg is the configuration they were last derived from.
	dpMu  sync.Mutex
	dpCfg config.Config
	// closing is set as Close begins: the mapper's last changes (its
	// mappings deleted) must not reconfigure a data plane being closed.
	closing atomic.Bool
	// minted remembers who each built-in TURN credential was minted for;
	// it outlives restarts of the TURN server.
	minted   *turn.Requesters
	stateDir string
	// startCfg is the configuration relayd started with: what chose the
	// data plane's transport. It never changes.
	startCfg config.Config

	applyMu sync.Mutex // one Apply at a time
	mu      sync.Mutex // guards the fields below
	cfg     config.Config
	system  [numSystemParts]*part   // the daemon's own running parts
	xmpp    map[string]*sessionPart // running sessions by service name
	order   []string                // session names in configuration order
}

// Options are what the daemon needs besides its configuration.
type Options struct {
	Logger  *slog.Logger
	Version string
	// StateDir keeps state across restarts (usage counts); "" keeps
	// nothing.
	StateDir string
	// OffloadSocket is the offload broker's socket when the
	// configuration names none (channel.offload_socket): the packaged
	// units pass theirs (relayd -offload-socket).
	OffloadSocket string
}

// New builds and starts a relay from cfg. It returns once everything is
// started (XMPP sessions connect in the background).
func New(ctx context.Context, cfg config.Config, opt Options) (*Daemon, error) {
	log, version := opt.Logger, opt.Version
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cfg.FillDefaults()
	d := &Daemon{version: version, log: log, started: time.Now(), ctx: ctx, cancel: cancel,
		listen: netip.MustParseAddr(cfg.ListenAddress), xmpp: map[string]*sessionPart{},
		minted: turn.NewRequesters(0), stateDir: opt.StateDir, startCfg: cfg, dpCfg: cfg}
	var err error
	features := kernel.Detect()
	d.dp, err = channel.New(channel.Config{
		Settings: dataPlaneSettings(cfg),
		Listen:   d.listen,
		Sockets:  socketsMode(cfg),
		GSO:      features.GSO,
		// The fast path opened through the broker, when there is one.
		OffloadSocket: cmp.Or(cfg.Channel.OffloadSocket, opt.OffloadSocket),
		PublicAddr: func() netip.Addr {
			if w := d.host.Load(); w != nil {
				return w.Current()
			}
			return netip.Addr{}
		},
		PublicAddr6: d.publicAddr6,
		Logger:      log.With("part", "dataplane"),
		OnEnd:       func(e channel.End) { d.svc.ChannelEnded(context.WithoutCancel(ctx), e) },
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("data plane: %w", err)
	}
	d.external.Store(&jinglenodes.External{})
	d.meter = usage.Open(opt.StateDir, usage.Totals{}, usage.Options{Logger: log.With("part", "usage")})
	d.live = usage.NewLive(nil)
	d.gate = admission.New(admission.Config{Draining: d.dp.Draining, Quota: d.meter.Exhausted})
	d.svc = jinglenodes.New(jinglenodes.Config{
		Allocator:  d.dp,
		Admission:  d.gate,
		PublicHost: func() netip.Addr { return d.host.Load().Current() },
		Name:       "jnrelay " + version,
		Listings:   d.listings,
		External:   func() jinglenodes.External { return *d.external.Load() },
		Logger:     log.With("part", "jinglenodes"),
	})
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

// apply moves the running relay from config old (zero at start) to cfg.
func (d *Daemon) apply(cfg, old config.Config) error {
	first := d.host.Load() == nil
	if !first {
		if err := d.reconfigureDataPlane(cfg); err != nil {
			return fmt.Errorf("data plane: %w", err)
		}
	}
	if first || cfg.PublicAddress != old.PublicAddress || cfg.PublicAddress6 != old.PublicAddress6 || !reflect.DeepEqual(cfg.PublicAddressSTUN, old.PublicAddressSTUN) ||
		cfg.Ports != old.Ports || cfg.STUN != old.STUN || cfg.TURN.Builtin != old.TURN.Builtin {
		if err := d.startPublicAddr(cfg); err != nil {
			return err
		}
	}
	if first || cfg.STUN != old.STUN || cfg.TURN != old.TURN {
		if err := d.startSTUN(cfg); err != nil {
			return err
		}
	} else {
		d.reloadTURNCertificate(cfg)
	}
	// After the STUN server: its port is one of those probed.
	if first || reachabilityChanged(cfg, old) {
		d.startReachability(cfg)
	}
	d.applySessions(cfg)
	// The tracker finds online sessions and the relay's own addresses
	// through the daemon at each crawl: session changes need no restart.
	if first || !reflect.DeepEqual(cfg.Tracker, old.Tracker) {
		if err := d.startTracker(cfg.Tracker); err != nil {
			return err
		}
	}
	if first || portMappingChanged(cfg, old) {
		d.startPortMapping(cfg)
	}
	if first || !reflect.DeepEqual(cfg.Directory, old.Directory) {
		if err := d.startDirectory(cfg); err != nil {
			return err
		}
	}
	d.meter.SetQuota(usage.Quota{DailyBytes: cfg.Limits.DailyQuotaBytes(), MonthlyBytes: cfg.Limits.MonthlyQuotaBytes()})
	d.meter.SetFlushInterval(time.Duration(cfg.Limits.UsageSaveSeconds) * time.Second)
	d.gate.SetLimits(admission.Limits{MaxChannels: cfg.Limits.MaxChannels,
		RequesterChannels: cfg.Limits.PerJIDChannels, RequesterRequestsPerMinute: cfg.Limits.PerJIDRequestsPerMinute,
		DomainChannels: domainChannels(cfg.Limits, d.dp.Capacity())})
	d.mu.Lock()
	d.cfg = cfg
	d.mu.Unlock()
	return nil
}

// Close ends every channel (requesters hear of it while sessions are still
// up), then stops everything else.
func (d *Daemon) Close() {
	d.log.Info("shutting down")
	d.closing.Store(true)
	d.withdrawDirectory() // while the sessions are up
	d.stopTURN()          // its allocations end before the data plane does
	d.dp.Close()
	d.cancel()
	d.wg.Wait()
	d.meter.Sample(d.usageTotals())
	if err := d.meter.Flush(); err != nil {
		d.log.Error("usage counts not saved at shutdown", "err", err)
	}
	tot := d.dp.Totals()
	d.log.Info("relayd stopped", "packets_local_to_remote", tot.Stats.Packets[channel.LocalToRemote],
		"packets_remote_to_local", tot.Stats.Packets[channel.RemoteToLocal], "dropped", tot.Stats.TotalDropped())
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
