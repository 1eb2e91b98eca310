package daemon

import (
	"reflect"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/channel"
	"github.com/jnrelay/jnrelay/relayd/reachability"
	"github.com/jnrelay/jnrelay/relayd/stun"
)

// reachabilityChanged reports whether the check must start again for cfg:
// its servers, or the ports it probes and names, changed.
func reachabilityChanged(cfg, old config.Config) bool {
	return !reflect.DeepEqual(cfg.Reachability, old.Reachability) || !reflect.DeepEqual(cfg.PublicAddressSTUN, old.PublicAddressSTUN) ||
		cfg.Ports != old.Ports || cfg.STUN != old.STUN || cfg.TURN.Builtin != old.TURN.Builtin
}

// startReachability (re)starts the reachability check: it probes the
// lowest and highest free relay ports and the STUN port against the
// configured STUN servers, at start, when the public address changes and
// every reachability.interval_minutes.
func (d *Daemon) startReachability(cfg config.Config) {
	c := reachability.New(reachability.Config{
		Servers: cfg.ReachabilitySTUN(), Targets: d.reachabilityTargets, Forward: cfg.ForwardText(),
		Interval: cfg.Reachability.Interval(), Logger: d.log.With("part", "reachability"),
	})
	d.reach.Store(c)
	d.runSystem(partReachability, c.Run)
}

// recheckReachability asks for a check soon (the public address changed).
func (d *Daemon) recheckReachability() {
	if c := d.reach.Load(); c != nil {
		c.Recheck()
	}
}

// reachabilityReport is the last check's report (nil before the check
// was started).
func (d *Daemon) reachabilityReport() *reachability.Report {
	c := d.reach.Load()
	if c == nil {
		return nil
	}
	r := c.Report()
	return &r
}

// reachabilityTargets are the ports to probe: the range's lowest and
// highest free blocks (a router forwarding too few ports shows at an
// edge) and the STUN server's socket while it runs.
func (d *Daemon) reachabilityTargets() []reachability.Target {
	edge := func(e channel.Edge) reachability.Target {
		return reachability.Target{Kind: reachability.KindRelay, Open: func(network string) (reachability.Socket, error) {
			p, err := d.dp.OpenEdgePort(network, e)
			if err != nil {
				return nil, err
			}
			return reachability.UDPSocket(p.UDPConn, p.Close), nil
		}}
	}
	targets := []reachability.Target{edge(channel.LowestPort), edge(channel.HighestPort)}
	if srv := d.stunSrv.Load(); srv != nil {
		targets = append(targets, stunTarget(srv))
	}
	return targets
}

func stunTarget(srv *stun.Server) reachability.Target {
	return reachability.Target{Kind: reachability.KindSTUN, Open: func(string) (reachability.Socket, error) {
		return srv.OpenProbe()
	}}
}
