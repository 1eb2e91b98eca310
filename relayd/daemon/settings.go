package daemon

import (
	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/channel"
)

// dataPlaneSettings is the one translation of the configuration into the
// data plane's live settings: New starts the data plane with them and
// apply hands them to Reconfigure.
func dataPlaneSettings(cfg config.Config) channel.Settings {
	return channel.Settings{
		PortMin: cfg.Ports.Min, PortMax: cfg.Ports.Max,
		Expire: cfg.Channel.Expire(), LatchGrace: cfg.Channel.LatchGrace(),
		MaxKbps: cfg.Channel.MaxKbps, TotalKbps: cfg.Limits.TotalKbps,
		FastPath: channel.FastPathMode(cfg.Channel.FastPath),
		MaxPPS:   cfg.Channel.MaxPPS, AllowPeers: cfg.Channel.AllowedPeers(), SprayThreshold: cfg.Channel.SprayerChannels,
	}
}
