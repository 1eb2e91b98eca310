package config

import "fmt"

// InboundPort is a port, or an inclusive range of ports, that relayd
// serves callers on: what a router's firewall must let in.
type InboundPort struct {
	Proto    string // "udp" or "tcp"
	Min, Max int    // Min == Max for a single port
	Why      string // what listens there
}

// String is the port the way firewalls write it: "udp 3478",
// "udp 40000-40999".
func (p InboundPort) String() string {
	if p.Min == p.Max {
		return fmt.Sprintf("%s %d", p.Proto, p.Min)
	}
	return fmt.Sprintf("%s %d-%d", p.Proto, p.Min, p.Max)
}

// InboundPorts lists the ports callers reach relayd on, under this
// configuration: the relay port range (channels and TURN allocations),
// the STUN server, the built-in TURN server (UDP, TCP, TLS). It names no
// port below 1024: relayd runs without the capability to bind them, so
// opening one could only expose another program. The API, the metrics
// listener and XMPP are not in it: the first two are for the LAN, the
// last is outbound.
func (c Config) InboundPorts() []InboundPort {
	var out []InboundPort
	add := func(proto string, min, max int, why string) {
		if min >= 1024 && max <= 65535 && min <= max {
			out = append(out, InboundPort{Proto: proto, Min: min, Max: max, Why: why})
		}
	}
	add("udp", c.Ports.Min, c.Ports.Max, "relay ports")
	if c.STUN.Enabled {
		add("udp", c.STUN.Port, c.STUN.Port, "STUN")
	}
	if b := c.TURN.Builtin; b.Enabled {
		add("udp", b.Port, b.Port, "TURN")
		if b.TCP {
			add("tcp", b.Port, b.Port, "TURN over TCP")
		}
		if b.TLSPort != 0 {
			add("tcp", b.TLSPort, b.TLSPort, "TURN over TLS")
		}
	}
	return out
}
