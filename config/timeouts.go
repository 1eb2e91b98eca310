package config

import "time"

// ApplyTimeout bounds a live change of configuration as a whole (the
// provisioning API's wait for Daemon.Apply), XMPP reconnections included.
const ApplyTimeout = 60 * time.Second

// OnlineTimeout is how long the daemon waits for new or changed XMPP
// services to come online before it rolls a configuration back: a third
// of ApplyTimeout, so that putting the previous configuration back (its
// sessions reconnect in the background) always fits in what remains.
const OnlineTimeout = ApplyTimeout / 3
