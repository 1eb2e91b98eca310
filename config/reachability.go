package config

import (
	"fmt"
	"net"
	"time"
)

// Reachability configures the self-test of inbound reachability: whether
// datagrams nobody asked for reach the relay ports and the STUN port from
// the Internet (relayd/reachability).
type Reachability struct {
	// STUNServers (host:port) are the STUN servers to check with, in
	// order: servers that answer from a second address when asked
	// (CHANGE-REQUEST). Empty = public_address_stun.
	STUNServers []string `json:"stun_servers,omitempty"`
	// IntervalMinutes is how often the check runs on its own, besides at
	// start and when the public address changes.
	IntervalMinutes int `json:"interval_minutes"`
}

// Bounds of the reachability keys.
const (
	maxReachabilitySTUN     = 4
	minReachabilityInterval = 5
	maxReachabilityInterval = 1440
)

// Interval is reachability.interval_minutes as a duration.
func (r Reachability) Interval() time.Duration { return time.Duration(r.IntervalMinutes) * time.Minute }

// ReachabilitySTUN are the servers the reachability check asks:
// reachability.stun_servers, else public_address_stun.
func (c Config) ReachabilitySTUN() []string {
	if len(c.Reachability.STUNServers) > 0 {
		return c.Reachability.STUNServers
	}
	return c.PublicAddressSTUN
}

func (c Config) validateReachability(p *fieldErrors) {
	r := c.Reachability
	if r.IntervalMinutes < minReachabilityInterval || r.IntervalMinutes > maxReachabilityInterval {
		p.addf("reachability.interval_minutes", "%d is outside %d-%d", r.IntervalMinutes, minReachabilityInterval, maxReachabilityInterval)
	}
	if len(r.STUNServers) > maxReachabilitySTUN {
		p.addf("reachability.stun_servers", "%d servers: at most %d", len(r.STUNServers), maxReachabilitySTUN)
	}
	for i, s := range r.STUNServers {
		if host, port, err := net.SplitHostPort(s); err != nil || host == "" || port == "" {
			p.addf(fmt.Sprintf("reachability.stun_servers[%d]", i), "%q is not host:port", s)
		}
	}
}
