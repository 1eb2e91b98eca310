package daemon

import (
	"context"
	"net/netip"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/jinglenodes"
	"github.com/jnrelay/jnrelay/relayd/turn"
)

// startTURN starts the built-in TURN server as a system part and returns
// how XEP-0215 announces it. Its secret is turn.secret(_file), else the
// one relayd keeps in its state directory.
func (d *Daemon) startTURN(cfg config.Config) (*jinglenodes.TURN, error) {
	secret, err := d.turnSecret(cfg)
	if err != nil {
		return nil, err
	}
	b := cfg.TURN.Builtin
	srv, err := turn.New(turn.Config{
		Listen: netip.AddrPortFrom(d.listen, uint16(b.Port)), TCP: b.TCP, Realm: b.Realm, Secret: secret,
		PublicAddr: d.publicAddr, DataPlane: d.dp, Gate: d.gate, Requesters: d.minted,
		Logger: d.log.With("part", "turn"),
	})
	if err != nil {
		return nil, err
	}
	d.turnSrv.Store(srv)
	d.runSystem(partTURN, func(ctx context.Context) { srv.Serve(ctx) })
	d.log.Info("TURN server started", "port", b.Port, "tcp", b.TCP, "realm", b.Realm)
	return &jinglenodes.TURN{Builtin: true, TCP: b.TCP, Port: b.Port, Transport: string(config.TransportUDP), Secret: secret,
		TTL: time.Duration(cfg.TURN.TTLSeconds) * time.Second, Minted: d.minted.Record}, nil
}

// stopTURN stops the built-in TURN server, if it runs; its allocations
// end and give their ports and reservations back.
func (d *Daemon) stopTURN() {
	if d.systemRunning(partTURN) {
		d.stopSystem(partTURN)
		d.turnSrv.Store(nil)
	}
}

func (d *Daemon) turnSecret(cfg config.Config) ([]byte, error) {
	if cfg.TURN.Secret != "" || cfg.TURN.SecretFile != "" {
		s, err := cfg.TURN.ResolveSecret(cfg.Path)
		return []byte(s), err
	}
	return turn.LoadOrCreateSecret(d.stateDir)
}

// publicAddr is the relay's advertised address (invalid while unknown).
func (d *Daemon) publicAddr() netip.Addr {
	if w := d.host.Load(); w != nil {
		return w.Current()
	}
	return netip.Addr{}
}

// liveCalls counts what a drain waits for: live channels and TURN
// allocations.
func (d *Daemon) liveCalls() int {
	n := d.dp.Totals().Active
	if srv := d.turnSrv.Load(); srv != nil {
		n += srv.Stats().AllocationsLive
	}
	return n
}
