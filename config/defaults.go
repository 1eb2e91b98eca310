package config

// Defaults are applied in two steps, both here: Default is the document
// every key falls back to (decoding fills only the keys a document
// names), and FillDefaults sets what depends on other keys once a
// document is decoded. Validate applies none: it only checks.

// Default returns the configuration every key falls back to.
func Default() Config {
	return Config{
		ListenAddress: "0.0.0.0",
		Ports:         PortRange{Min: 40000, Max: 40999},
		PortMapping:   PortMapping{Mode: PortMappingAuto},
		Channel:       Channel{ExpireSeconds: 60, LatchGraceSeconds: 5, DrainSeconds: 30, FastPath: FastPathAuto},
		Limits:        Limits{PerJIDChannels: 16, PerJIDRequestsPerMinute: 120, UsageSaveSeconds: 300},
		Tracker:       Tracker{RefreshSeconds: 600},
		Directory:     Directory{RefreshSeconds: 300},
		STUN:          STUN{Enabled: true, Port: 3478, Classic: true, MaxResponsesPerSecond: 200},
		TURN: TURN{Port: 3478, Transport: TransportUDP, TTLSeconds: 86400,
			Builtin: BuiltinTURN{Port: 3479, TCP: true, Realm: "jnrelay"}},
		Reachability: Reachability{IntervalMinutes: 60},
		Reconnect:    Reconnect{MinSeconds: 1, MaxSeconds: 60},
		Log:          Log{Level: LogInfo, Format: LogText},
	}
}

// FillDefaults sets the defaults that depend on other keys: a service
// without a name is named after what it registers as (see DefaultName).
// Filling twice changes nothing.
func (c *Config) FillDefaults() {
	for i := range c.XMPP {
		c.XMPP[i].Name = c.XMPP[i].DefaultName()
	}
}

// DefaultName is the service's name: Name, else the domain of a component
// or the JID of a client. Services are told apart by it (a live apply
// keeps a session whose service is unchanged; the API keeps a redacted
// secret with the service of the same name).
func (s Service) DefaultName() string {
	switch {
	case s.Name != "":
		return s.Name
	case s.Type == ServiceClient:
		return s.JID
	}
	return s.Domain
}
