package daemon

import (
	"fmt"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/channel"
)

// SocketsStatus is how the relay ports are received, as status shows it:
// channel.sockets as configured, what runs, and for auto why.
type SocketsStatus struct {
	Mode   string `json:"mode"`          // channel.sockets as configured
	Active string `json:"active"`        // per_port or steered
	Why    string `json:"why,omitempty"` // auto: why it chose Active
}

// turnNeedsPerPort is why auto leaves the ports per-port while the
// built-in TURN server is on.
const turnNeedsPerPort = "the built-in TURN server (turn.builtin.enabled) needs a socket per port"

// socketsMode is the data plane's Sockets for cfg, and why auto was
// settled here rather than by the data plane ("" when it was not).
func socketsMode(cfg config.Config) (channel.SocketsMode, string) {
	switch cfg.Channel.SocketsOrDefault() {
	case config.SocketsSteered:
		return channel.SocketsSteered, ""
	case config.SocketsAuto:
		if cfg.TURN.Builtin.Enabled {
			return channel.SocketsPerPort, turnNeedsPerPort
		}
		return channel.SocketsAuto, ""
	}
	return channel.SocketsPerPort, ""
}

func (d *Daemon) socketsStatus() SocketsStatus {
	d.mu.Lock()
	cfg := d.cfg
	d.mu.Unlock()
	got := d.dp.Sockets()
	st := SocketsStatus{Mode: string(cfg.Channel.SocketsOrDefault()), Active: string(got.Mode), Why: got.Why}
	if _, why := socketsMode(d.startCfg); why != "" {
		st.Why = why
	}
	return st
}

// steeredRefuses refuses turning the built-in TURN server on while auto
// runs steered ports: its relay ports need sockets of their own, and the
// transport is chosen once, at start.
func (d *Daemon) steeredRefuses(cfg config.Config) error {
	if cfg.TURN.Builtin.Enabled && d.dp.Sockets().Mode == channel.SocketsSteered {
		return fmt.Errorf("turn.builtin.enabled: channel.sockets auto chose steered ports at start, and the built-in TURN server needs a socket per port: restart relayd to turn it on (auto then keeps a socket per port)")
	}
	return nil
}
