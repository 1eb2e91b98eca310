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
	tlsCfg := d.turnTLS(cfg)
	srv, err := turn.New(turn.Config{
		Listen: netip.AddrPortFrom(d.listen, uint16(b.Port)), TCP: b.TCP, TLS: tlsCfg, Realm: b.Realm, Secret: secret,
		PublicAddr: d.publicAddr, PublicAddr6: d.publicAddr6, DataPlane: d.dp, Gate: d.gate, Requesters: d.minted,
		Logger: d.log.With("part", "turn"),
	})
	if err != nil {
		return nil, err
	}
	d.turnSrv.Store(srv)
	d.runSystem(partTURN, func(ctx context.Context) { srv.Serve(ctx) })
	announced := &jinglenodes.TURN{Builtin: true, TCP: b.TCP, Port: b.Port, Transport: string(config.TransportUDP), Secret: secret,
		TTL: time.Duration(cfg.TURN.TTLSeconds) * time.Second, Minted: d.minted.Record}
	if d.listen.IsUnspecified() {
		// Its sockets are dual-stack: announced at the public IPv6
		// address too, for IPv6-only clients.
		announced.Host6 = d.publicAddr6
	}
	if tlsCfg != nil {
		announced.TLSPort, announced.TLSHost = b.TLSPort, b.TLSHost
	}
	d.log.Info("TURN server started", "port", b.Port, "tcp", b.TCP, "tls_port", announced.TLSPort, "realm", b.Realm)
	return announced, nil
}

// turnTLS is the TLS listener's configuration, nil when TLS is off or
// its certificate cannot be read now (validated earlier, the files may
// have changed since): then TURN runs without TLS, which is not
// announced, and the error is logged.
func (d *Daemon) turnTLS(cfg config.Config) *turn.TLSConfig {
	b := cfg.TURN.Builtin
	if b.TLSPort == 0 {
		return nil
	}
	cert, err := b.ResolveCertificate(cfg.Path)
	if err != nil {
		d.log.Error("TURN over TLS not started", "err", err)
		return nil
	}
	return &turn.TLSConfig{Listen: netip.AddrPortFrom(d.listen, uint16(b.TLSPort)), Certificate: cert}
}

// reloadTURNCertificate reads the TLS certificate again, when a
// configuration is applied without restarting TURN (a SIGHUP after a
// renewal): handshakes from then on use it, allocations go on. An
// unreadable certificate leaves the current one in use.
func (d *Daemon) reloadTURNCertificate(cfg config.Config) {
	srv := d.turnSrv.Load()
	if srv == nil || !srv.TLSAddr().IsValid() {
		return
	}
	cert, err := cfg.TURN.Builtin.ResolveCertificate(cfg.Path)
	if err != nil {
		d.log.Error("TURN over TLS certificate not reloaded: the current one stays in use", "err", err)
		return
	}
	srv.SetCertificate(cert)
}

// stopTURN stops the built-in TURN server, if it runs; its allocations
// end and give their ports and reservations back.
func (d *Daemon) stopTURN() {
	if d.systemRunning(partTURN) {
		d.stopSystem(partTURN)
		d.turnEnded.retire(&d.turnSrv)
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

// publicAddr6 is the relay's public IPv6 address, the host of IPv6 TURN
// relayed addresses (invalid while none): public_address6, else a public
// IPv6 address of the interfaces.
func (d *Daemon) publicAddr6() netip.Addr {
	if v := d.host6.Load(); v != nil {
		return v.Current()
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
