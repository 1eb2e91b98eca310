// Command relayd is the jnrelay Jingle Nodes (XEP-0278) relay daemon: it
// registers with XMPP services, answers channel requests by allocating
// relay ports, and forwards UDP between the two parties of each call.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/jnrelay/jnrelay/kernel"
	"github.com/jnrelay/jnrelay/relayd/channel"
	"github.com/jnrelay/jnrelay/relayd/config"
	"github.com/jnrelay/jnrelay/relayd/jinglenodes"
	"github.com/jnrelay/jnrelay/relayd/publicaddr"
	"github.com/jnrelay/jnrelay/relayd/stun"
	"github.com/jnrelay/jnrelay/relayd/tracker"
	"github.com/jnrelay/jnrelay/relayd/xmppsession"
)

// version is stamped at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relayd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "/etc/jnrelay/relayd.json", "configuration `file`")
	check := fs.String("check-config", "", "validate the configuration `file`, print the result and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch {
	case *showVersion:
		fmt.Fprintln(stdout, "relayd", version)
		return 0
	case *check != "":
		if _, err := config.Load(*check); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: configuration valid\n", *check)
		return 0
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		fmt.Fprintln(stderr, "relayd:", err)
		return 1
	}
	log := newLogger(cfg.Log, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("relayd stopped", "err", err)
		return 1
	}
	return 0
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs the relay until ctx is cancelled.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	host, err := advertisedHost(ctx, cfg, log)
	if err != nil {
		return err
	}
	go host.Run(ctx)
	listen := netip.MustParseAddr(cfg.ListenAddress) // validated by config

	// The data plane reports ended channels to the protocol layer, which
	// is built after it: route through a variable set below.
	var svc *jinglenodes.Service
	var listings func() []jinglenodes.Listing // set once the tracker exists
	dp, err := channel.New(channel.Config{
		Listen: listen, PortMin: cfg.Ports.Min, PortMax: cfg.Ports.Max,
		Expire: cfg.Channel.Expire(), LatchGrace: cfg.Channel.LatchGrace(), MaxKbps: cfg.Channel.MaxKbps,
		Logger: log.With("part", "dataplane"),
		OnEnd:  func(e channel.End) { svc.ChannelEnded(context.WithoutCancel(ctx), e) },
	})
	if err != nil {
		return fmt.Errorf("data plane: %w", err)
	}
	external, err := newExternal(cfg)
	if err != nil {
		return err
	}
	svc = jinglenodes.New(jinglenodes.Config{
		External:  external,
		Allocator: dp, PublicHost: host.Current, Name: "jnrelay " + version,
		Listings: func() []jinglenodes.Listing { return listings() },
		Logger:   log.With("part", "jinglenodes"),
	})

	sessions, err := newSessions(cfg, svc, log)
	if err != nil {
		return err
	}
	trk, err := newTracker(cfg.Tracker, sessions, log)
	if err != nil {
		return err
	}
	listings = func() []jinglenodes.Listing {
		var out []jinglenodes.Listing
		for _, t := range trk.Trackers() {
			out = append(out, jinglenodes.Listing{Kind: "tracker", Address: t.String()})
		}
		for _, r := range trk.Healthy() {
			out = append(out, jinglenodes.Listing{Kind: "relay", Address: r.Address, Protocol: r.Protocol})
		}
		return out
	}
	log.LogAttrs(ctx, slog.LevelInfo, "kernel features", kernel.Detect().LogAttrs()...)
	log.Info("relayd started", "version", version, "public_address", host.String(), "listen_address", listen.String(),
		"ports", fmt.Sprintf("%d-%d", cfg.Ports.Min, cfg.Ports.Max), "capacity", dp.Capacity(), "xmpp_services", len(sessions))

	sessCtx, cancelSessions := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	// STUN first: the answers list it (or not) from the first request on.
	if cfg.STUN.Enabled {
		srv, err := stun.New(stun.Config{Listen: netip.AddrPortFrom(listen, uint16(cfg.STUN.Port)), Classic: cfg.STUN.Classic,
			Software: "jnrelay", Logger: log.With("part", "stun")})
		if err != nil {
			// The relay is still useful without STUN: say so and go on.
			log.Error("STUN server not started", "err", err)
			external.STUNPort = 0
		} else {
			wg.Go(func() { srv.Serve(sessCtx) })
		}
	}
	for _, s := range sessions {
		wg.Go(func() { s.Run(sessCtx) })
	}
	wg.Go(func() { trk.Run(sessCtx) })
	<-ctx.Done()
	log.Info("shutting down")
	// End channels while sessions are still up, so requesters hear of it.
	dp.Close()
	cancelSessions()
	wg.Wait()
	tot := dp.Totals()
	log.Info("relayd stopped", "packets_local_to_remote", tot.Stats.Packets[channel.LocalToRemote],
		"packets_remote_to_local", tot.Stats.Packets[channel.RemoteToLocal], "dropped", tot.Stats.TotalDropped())
	return nil
}

// advertisedHost watches the address put in channel results: the
// configured one, or the best interface address, followed live.
func advertisedHost(ctx context.Context, cfg config.Config, log *slog.Logger) (*publicaddr.Watcher, error) {
	if cfg.PublicAddress != "" {
		return publicaddr.NewStatic(netip.MustParseAddr(cfg.PublicAddress)), nil // validated by config
	}
	forward := fmt.Sprintf("UDP ports %d-%d", cfg.Ports.Min, cfg.Ports.Max)
	if cfg.STUN.Enabled {
		forward += fmt.Sprintf(" and %d", cfg.STUN.Port)
	}
	return publicaddr.NewWatcher(ctx, publicaddr.Options{STUNServers: cfg.PublicAddressSTUN, Forward: forward,
		Logger: log.With("part", "publicaddr")})
}

func newSessions(cfg config.Config, svc *jinglenodes.Service, log *slog.Logger) ([]*xmppsession.Session, error) {
	var out []*xmppsession.Session
	backoff := xmppsession.Backoff{Min: cfg.Reconnect.Min(), Max: cfg.Reconnect.Max()}
	for _, s := range cfg.XMPP {
		secret, err := s.ResolveSecret()
		if err != nil {
			return nil, err
		}
		policy, err := newPolicy(s)
		if err != nil {
			return nil, err
		}
		var sess *xmppsession.Session
		switch s.Type {
		case "component":
			domain, err := jid.Parse(s.Domain)
			if err != nil {
				return nil, fmt.Errorf("xmpp service %s: domain: %w", s.Name, err)
			}
			sess = xmppsession.NewComponent(xmppsession.ComponentConfig{
				Name: s.Name, Server: s.Server, Domain: domain, Secret: secret, Backoff: backoff,
				Logger: log.With("part", "xmpp", "server", s.Server),
			})
			sess.SetHandler(svc.Handler(sess, policy))
		case "client":
			account, err := jid.Parse(s.JID)
			if err != nil {
				return nil, fmt.Errorf("xmpp service %s: jid: %w", s.Name, err)
			}
			sess, err = xmppsession.NewClient(xmppsession.ClientConfig{
				Name: s.Name, JID: account, Password: secret, Server: s.Server,
				DirectTLS: s.TLS == "direct", CAFile: s.CAFile, Backoff: backoff,
				Logger: log.With("part", "xmpp", "server", s.Server),
			})
			if err != nil {
				return nil, err
			}
			h := svc.Handler(sess, policy)
			sess.SetHandler(h)
			sess.SetOnOnline(h.OnOnline)
		}
		out = append(out, sess)
	}
	if len(out) == 0 {
		return nil, errors.New("no xmpp service configured")
	}
	return out, nil
}

// newExternal describes what XEP-0215 announces: the STUN server and an
// external TURN server with TURN REST credentials.
func newExternal(cfg config.Config) (*jinglenodes.External, error) {
	ext := &jinglenodes.External{}
	if cfg.STUN.Enabled {
		ext.STUNPort = cfg.STUN.Port
	}
	if cfg.TURN.Host != "" {
		secret, err := cfg.TURN.ResolveSecret()
		if err != nil {
			return nil, err
		}
		ext.TURN = &jinglenodes.TURN{Host: cfg.TURN.Host, Port: cfg.TURN.Port, Transport: cfg.TURN.Transport,
			Secret: []byte(secret), TTL: time.Duration(cfg.TURN.TTLSeconds) * time.Second}
	}
	return ext, nil
}

// newTracker builds the relay-discovery crawler; it queries through
// whichever session is online.
func newTracker(c config.Tracker, sessions []*xmppsession.Session, log *slog.Logger) (*tracker.Tracker, error) {
	trackers, err := jinglenodes.ParseJIDList(c.Trackers)
	if err != nil {
		return nil, fmt.Errorf("tracker.trackers: %w", err)
	}
	domains, err := jinglenodes.ParseJIDList(c.DiscoverDomains)
	if err != nil {
		return nil, fmt.Errorf("tracker.discover_domains: %w", err)
	}
	return tracker.New(tracker.Config{
		Trackers: trackers, Domains: domains, Refresh: c.Refresh(), Logger: log.With("part", "tracker"),
		Querier: func() tracker.Querier {
			for _, s := range sessions {
				if s.Status().State == xmppsession.StateOnline {
					return s
				}
			}
			return nil
		},
		Self: func() []jid.JID {
			var out []jid.JID
			for _, s := range sessions {
				out = append(out, s.Addr())
			}
			return out
		},
	}), nil
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
