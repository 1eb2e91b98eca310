package daemon

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/xmppsession"
)

// ApplyTimeout bounds how long new or changed XMPP services may take to
// come online before Apply rolls the whole configuration back
// (config.OnlineTimeout: a third of what a whole apply may take).
const ApplyTimeout = config.OnlineTimeout

// Apply switches to cfg without dropping any call: the data plane keeps
// every live channel, unchanged XMPP sessions stay connected, and only
// what changed is restarted. If a new or changed XMPP service does not
// come online within ApplyTimeout (or by ctx's deadline, if sooner), the
// previous configuration is restored and the error says which service
// failed and why. An invalid cfg is refused with config.Validate's
// *config.Invalid; a change that needs a restart is refused naming its
// key.
func (d *Daemon) Apply(ctx context.Context, cfg config.Config) error {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	cfg.FillDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	old := d.Config()
	if err := needsRestart(old, cfg); err != nil {
		return err
	}
	if err := d.apply(cfg, old); err != nil {
		d.log.Warn("new configuration failed, restoring the previous one", "err", err)
		return d.restore(old, cfg, err)
	}
	if err := d.waitOnline(ctx, cfg, old); err != nil {
		d.log.Warn("new configuration did not come up, restoring the previous one", "err", err)
		return d.restore(old, cfg, err)
	}
	d.log.Info("configuration applied")
	return nil
}

// needsRestart refuses the changes a running relay cannot make: the
// sockets of the port range are bound (or steered) as relayd starts.
func needsRestart(old, cfg config.Config) error {
	if cfg.ListenAddress != old.ListenAddress {
		return fmt.Errorf("listen_address: changing it needs a restart of relayd")
	}
	if cfg.Channel.SocketsOrDefault() != old.Channel.SocketsOrDefault() {
		return fmt.Errorf("channel.sockets: changing it needs a restart of relayd")
	}
	if cfg.Channel.OffloadSocket != old.Channel.OffloadSocket {
		return fmt.Errorf("channel.offload_socket: changing it needs a restart of relayd")
	}
	return nil
}

// restore puts the previous configuration back after cfg failed with
// err, and returns err (joined with the restore's own failure, if any).
func (d *Daemon) restore(old, cfg config.Config, err error) error {
	if rerr := d.apply(old, cfg); rerr != nil {
		return errors.Join(err, fmt.Errorf("restore previous configuration: %w", rerr))
	}
	return err
}

// waitOnline waits until every service that is new or changed in cfg
// (compared with old) is online, or fails naming those that are not.
func (d *Daemon) waitOnline(ctx context.Context, cfg, old config.Config) error {
	watch := changedServices(old, cfg)
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

// changedServices names the services of cfg that are new or changed
// compared with old, in configuration order.
func changedServices(old, cfg config.Config) []string {
	before := map[string]config.Service{}
	for _, s := range old.XMPP {
		before[s.Name] = s
	}
	var out []string
	for _, s := range cfg.XMPP {
		if prev, ok := before[s.Name]; !ok || !reflect.DeepEqual(prev, s) {
			out = append(out, s.Name)
		}
	}
	return out
}
