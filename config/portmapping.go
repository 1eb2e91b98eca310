package config

import "time"

// PortMapping is port_mapping: asking the donor's home router to forward
// relayd's ports (PCP, NAT-PMP, UPnP IGD). It runs only when
// public_address is empty and the address toward the router is private.
type PortMapping struct {
	// Mode is "auto" (map when behind a router that offers it) or "off"
	// (forward the ports by hand; the OpenWrt package's default, where
	// relayd runs on the router itself).
	Mode PortMappingMode `json:"mode,omitempty"`
	// LeaseSeconds is the lease asked for each mapping (0 = 3600);
	// mappings are renewed at half the lease the router grants.
	LeaseSeconds int `json:"lease_seconds,omitempty"`
}

// PortMappingMode is port_mapping.mode.
type PortMappingMode string

const (
	// PortMappingDefault (empty) is PortMappingAuto.
	PortMappingDefault PortMappingMode = ""
	// PortMappingAuto maps relayd's ports when a router offers it.
	PortMappingAuto PortMappingMode = "auto"
	// PortMappingOff never asks the router.
	PortMappingOff PortMappingMode = "off"
)

// Enabled reports whether relayd asks the router for mappings.
func (p PortMapping) Enabled() bool { return p.Mode != PortMappingOff }

// Lease is the lease asked for (0 = the mapper's default).
func (p PortMapping) Lease() time.Duration { return time.Duration(p.LeaseSeconds) * time.Second }

// Shortest and longest lease accepted: a lease renews at half its
// length, so 10 s is a request every 5 s (for tests); a day is what
// routers grant at most.
const (
	minLeaseSeconds = 10
	maxLeaseSeconds = 86400
)

func (c Config) validatePortMapping(p *fieldErrors) {
	switch c.PortMapping.Mode {
	case PortMappingDefault, PortMappingAuto, PortMappingOff:
	default:
		p.addf("port_mapping.mode", "%q is not auto or off", c.PortMapping.Mode)
	}
	if s := c.PortMapping.LeaseSeconds; s != 0 && (s < minLeaseSeconds || s > maxLeaseSeconds) {
		p.addf("port_mapping.lease_seconds", "%d is outside %d-%d (0 = 3600)", s, minLeaseSeconds, maxLeaseSeconds)
	}
}
