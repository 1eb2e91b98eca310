package daemon

import (
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

// socketsMode is the data plane's Sockets for cfg.
func socketsMode(cfg config.Config) channel.SocketsMode {
	switch cfg.Channel.SocketsOrDefault() {
	case config.SocketsSteered:
		return channel.SocketsSteered
	case config.SocketsAuto:
		return channel.SocketsAuto
	}
	return channel.SocketsPerPort
}

func (d *Daemon) socketsStatus() SocketsStatus {
	d.mu.Lock()
	cfg := d.cfg
	d.mu.Unlock()
	got := d.dp.Sockets()
	return SocketsStatus{Mode: string(cfg.Channel.SocketsOrDefault()), Active: string(got.Mode), Why: got.Why}
}
