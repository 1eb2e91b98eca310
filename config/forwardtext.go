package config

import (
	"slices"
	"strings"
)

// ForwardText names the inbound ports the way the advice to a donor
// behind NAT does ("forward … on the router"): "UDP ports 40000-40999
// and 3478, UDP and TCP port 3479 (TURN), TCP port 5349 (TURN over
// TLS)". It is InboundPorts in words, so the advice names what the
// firewall opens and port mapping maps, nothing else.
func (c Config) ForwardText() string {
	return describePorts(c.InboundPorts())
}

// label is what follows a port in ForwardText: the relay and STUN ports
// go unnamed, as they always have; TURN's are told apart, since a donor
// may forward them on another page of the router (TCP).
func (p Purpose) label() string {
	switch p {
	case PurposeTURN:
		return "TURN"
	case PurposeTURNTLS:
		return "TURN over TLS"
	}
	return ""
}

// describePorts words ports in two steps: the same port (or range) of
// one label under several protocols becomes one item ("UDP and TCP port
// 3479"); then items of the same protocols and label are named together
// ("UDP ports 40000-40999 and 3478"). Both keep the order of ports.
func describePorts(ports []InboundPort) string {
	type item struct {
		protos       []string // "UDP", "TCP", as met
		ports, label string
	}
	var items []*item
	for _, p := range ports {
		proto, label := strings.ToUpper(p.Proto), p.Purpose.label()
		i := slices.IndexFunc(items, func(it *item) bool { return it.ports == p.Ports() && it.label == label })
		if i < 0 {
			items = append(items, &item{ports: p.Ports(), label: label})
			i = len(items) - 1
		}
		if !slices.Contains(items[i].protos, proto) {
			items[i].protos = append(items[i].protos, proto)
		}
	}

	type phrase struct {
		protos, label string
		ports         []string
	}
	var phrases []*phrase
	for _, it := range items {
		protos := strings.Join(it.protos, " and ")
		i := slices.IndexFunc(phrases, func(ph *phrase) bool { return ph.protos == protos && ph.label == it.label })
		if i < 0 {
			phrases = append(phrases, &phrase{protos: protos, label: it.label})
			i = len(phrases) - 1
		}
		phrases[i].ports = append(phrases[i].ports, it.ports)
	}

	var parts []string
	for _, ph := range phrases {
		noun := "port"
		if len(ph.ports) > 1 || strings.Contains(ph.ports[0], "-") {
			noun = "ports"
		}
		s := ph.protos + " " + noun + " " + andList(ph.ports)
		if ph.label != "" {
			s += " (" + ph.label + ")"
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		// Only a configuration that failed validation lists no port;
		// the advice still reads as a sentence.
		return "the relay's ports"
	}
	return strings.Join(parts, ", ")
}

// andList is "a", "a and b", "a, b and c".
func andList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}
