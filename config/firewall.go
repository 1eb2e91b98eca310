package config

import "fmt"

// Purpose says what listens on an inbound port. The values are the ones
// the port mapping status shows ("purpose").
type Purpose string

const (
	PurposeRelay   Purpose = "relay"    // the relay port range: channels and TURN allocations
	PurposeSTUN    Purpose = "stun"     // the STUN server
	PurposeTURN    Purpose = "turn"     // the built-in TURN server, UDP and TCP
	PurposeTURNTLS Purpose = "turn-tls" // the built-in TURN server over TLS
)

// InboundPort is a port, or an inclusive range of ports, that relayd
// serves callers on: what a router's firewall must let in.
type InboundPort struct {
	Proto    string // "udp" or "tcp"
	Min, Max int    // Min == Max for a single port
	Purpose  Purpose
}

// String is the port the way firewalls write it: "udp 3478",
// "udp 40000-40999".
func (p InboundPort) String() string {
	return p.Proto + " " + p.Ports()
}

// Ports is the port or the range alone: "3478", "40000-40999".
func (p InboundPort) Ports() string {
	if p.Min == p.Max {
		return fmt.Sprint(p.Min)
	}
	return fmt.Sprintf("%d-%d", p.Min, p.Max)
}

// InboundPorts lists the ports callers reach relayd on, under this
// configuration: the relay port range (channels and TURN allocations),
// the STUN server, the built-in TURN server (UDP, TCP, TLS). It is the
// one list of them: the router's firewall opens it (relayd
// -firewall-ports), port mapping asks the home router for it, and the
// NAT warning and the reachability advice name it (ForwardText).
//
// It names no port below 1024: relayd runs without the capability to
// bind them, so opening, mapping or forwarding one could only expose
// another program. The API, the metrics listener and XMPP are not in it:
// the first two are for the LAN, the last is outbound.
func (c Config) InboundPorts() []InboundPort {
	var out []InboundPort
	add := func(proto string, min, max int, purpose Purpose) {
		if min >= 1024 && max <= 65535 && min <= max {
			out = append(out, InboundPort{Proto: proto, Min: min, Max: max, Purpose: purpose})
		}
	}
	add("udp", c.Ports.Min, c.Ports.Max, PurposeRelay)
	if c.STUN.Enabled {
		add("udp", c.STUN.Port, c.STUN.Port, PurposeSTUN)
	}
	if b := c.TURN.Builtin; b.Enabled {
		add("udp", b.Port, b.Port, PurposeTURN)
		if b.TCP {
			add("tcp", b.Port, b.Port, PurposeTURN)
		}
		if b.TLSPort != 0 {
			add("tcp", b.TLSPort, b.TLSPort, PurposeTURNTLS)
		}
	}
	return out
}
