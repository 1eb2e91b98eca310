package daemon

import (
	"github.com/jnrelay/jnrelay/relayd/channel"
	"github.com/jnrelay/jnrelay/relayd/config"
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

// withSettings is c with the live settings s: the fields channel.Config
// shares with channel.Settings.
func withSettings(c channel.Config, s channel.Settings) channel.Config {
	c.PortMin, c.PortMax = s.PortMin, s.PortMax
	c.Expire, c.LatchGrace = s.Expire, s.LatchGrace
	c.MaxKbps, c.TotalKbps = s.MaxKbps, s.TotalKbps
	c.FastPath = s.FastPath
	c.MaxPPS, c.AllowPeers, c.SprayThreshold = s.MaxPPS, s.AllowPeers, s.SprayThreshold
	return c
}
