package daemon

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/channel"
	"github.com/jnrelay/jnrelay/relayd/portmap"
)

// PortMappingStatus is what the router maps for relayd (status document,
// web page, `relayd status`).
type PortMappingStatus struct {
	Protocol string `json:"protocol,omitempty"` // pcp, nat-pmp or upnp; empty while nothing is mapped
	Gateway  string `json:"gateway,omitempty"`
	External string `json:"external_address,omitempty"`
	// RelayPorts is the part of the relay range mapped ("40000-40255"),
	// the only ports channels are given meanwhile.
	RelayPorts string             `json:"relay_ports,omitempty"`
	Mappings   []PortMappingEntry `json:"mappings,omitempty"`
	Error      string             `json:"error,omitempty"`
}

// PortMappingEntry is one mapped port, or the relay ports together
// (with the earliest of their leases).
type PortMappingEntry struct {
	Transport string `json:"transport"`
	Ports     string `json:"ports"`
	Purpose   string `json:"purpose"`
	// Expires is the lease's end (RFC 3339), empty for a mapping without
	// one.
	Expires string `json:"expires,omitempty"`
}

// wantsPortMapping: only a relay that detects its address, behind a
// router, asks it; on the router itself (OpenWrt) the firewall opens the
// ports and port_mapping.mode is off.
// A relay listening on loopback has nothing to map.
func wantsPortMapping(cfg config.Config) bool {
	listen, err := netip.ParseAddr(cfg.ListenAddress)
	return cfg.PortMapping.Enabled() && cfg.PublicAddress == "" && err == nil && !listen.IsLoopback()
}

// portMappingChanged reports whether the ports to map, or how, changed.
func portMappingChanged(cfg, old config.Config) bool {
	return cfg.PortMapping != old.PortMapping || cfg.PublicAddress != old.PublicAddress || cfg.Ports != old.Ports ||
		cfg.STUN != old.STUN || cfg.TURN.Builtin != old.TURN.Builtin
}

// startPortMapping (re)starts the mapper for cfg, or only stops it when
// cfg wants none. Stopping deletes the old mappings and gives the data
// plane its whole range back.
func (d *Daemon) startPortMapping(cfg config.Config) {
	d.stopSystem(partPortMap)
	d.mapper.Store(nil)
	d.setMapped(portmap.State{})
	if !wantsPortMapping(cfg) {
		return
	}
	m := portmap.New(portmap.Config{
		Fixed:    ownFixedPorts(cfg),
		RelayMin: cfg.Ports.Min, RelayMax: cfg.Ports.Max,
		Lifetime: cfg.PortMapping.Lease(),
		Gateway:  d.gateway,
		OnChange: d.setMapped,
		Logger:   d.log.With("part", "portmap"),
	})
	d.mapper.Store(m)
	d.runSystem(partPortMap, m.Run)
}

// gateway is the default gateway and the address the router must forward
// to: the listen address when it is one, else the address toward the
// gateway.
func (d *Daemon) gateway() (gw, local netip.Addr, err error) {
	gw, local, err = portmap.DefaultGateway()
	if err == nil && !d.listen.IsUnspecified() {
		local = d.listen
	}
	return gw, local, err
}

// ownFixedPorts are relayd's single inbound ports (STUN, the built-in
// TURN server's UDP, TCP and TLS ports): config.InboundPorts less the
// relay range, which the mapper maps a channel at a time. Nothing else is
// ever mapped, and so nothing the firewall would not open (no port below
// 1024: relayd cannot bind one, and mapping it could only expose another
// program of this device).
func ownFixedPorts(cfg config.Config) []portmap.Port {
	var out []portmap.Port
	for _, p := range cfg.InboundPorts() {
		if p.Purpose == config.PurposeRelay {
			continue
		}
		for port := p.Min; port <= p.Max; port++ {
			out = append(out, portmap.Port{Transport: portmap.Transport(p.Proto), Port: port, Purpose: string(p.Purpose)})
		}
	}
	return out
}

// setMapped takes the mapper's new state: the data plane gives channels
// only on mapped relay ports (the capacity advertised shrinks with it),
// and the public address follows the router's external address.
func (d *Daemon) setMapped(st portmap.State) {
	old := d.mapped.Swap(&st)
	if old == nil {
		old = &portmap.State{}
	}
	if st.RelayFirst != old.RelayFirst || st.RelayLast != old.RelayLast {
		if !d.closing.Load() {
			d.dpMu.Lock()
			cfg := d.dpCfg
			d.dpMu.Unlock()
			if err := d.reconfigureDataPlane(cfg); err != nil {
				d.log.Error("data plane not moved to the mapped ports", "err", err)
			}
		}
	}
	if st.External != old.External || (len(st.Mappings) == 0) != (len(old.Mappings) == 0) {
		if w := d.host.Load(); w != nil {
			w.Remap()
		}
	}
}

// mappedExternal is the router's external address while it maps
// relayd's ports (the public address watcher's Mapped).
func (d *Daemon) mappedExternal() netip.Addr {
	if st := d.mapped.Load(); st != nil && len(st.Mappings) > 0 {
		return st.External
	}
	return netip.Addr{}
}

// reconfigureDataPlane hands cfg's data-plane settings to the data plane,
// its port range narrowed to the mapped relay ports while the router
// maps some. dpMu orders it with the mapper's changes, so the last
// configuration and the last mapping both hold.
func (d *Daemon) reconfigureDataPlane(cfg config.Config) error {
	d.dpMu.Lock()
	defer d.dpMu.Unlock()
	d.dpCfg = cfg
	return d.dp.Reconfigure(d.dataPlane(cfg))
}

// dataPlane is dataPlaneSettings with the mapped range applied.
func (d *Daemon) dataPlane(cfg config.Config) channel.Settings {
	s := dataPlaneSettings(cfg)
	if st := d.mapped.Load(); st != nil && st.RelayFirst != 0 && wantsPortMapping(cfg) {
		s.PortMin, s.PortMax = max(s.PortMin, st.RelayFirst), min(s.PortMax, st.RelayLast)
	}
	return s
}

// portMappingStatus is the mapper's state for the status document (nil
// when port mapping is off).
func (d *Daemon) portMappingStatus() *PortMappingStatus {
	m := d.mapper.Load()
	if m == nil {
		return nil
	}
	st := m.State()
	out := &PortMappingStatus{Protocol: string(st.Protocol), Error: st.Error}
	if st.Gateway.IsValid() {
		out.Gateway = st.Gateway.String()
	}
	if st.External.IsValid() {
		out.External = st.External.String()
	}
	if st.RelayFirst != 0 {
		out.RelayPorts = fmt.Sprintf("%d-%d", st.RelayFirst, st.RelayLast)
	}
	out.Mappings = summarize(st.Mappings)
	return out
}

// summarize lists the single ports one by one and the relay ports as one
// range.
func summarize(ms []portmap.Mapping) []PortMappingEntry {
	var out []PortMappingEntry
	var relay *PortMappingEntry
	var first, last int
	var relayExpires time.Time
	for _, m := range ms {
		if m.Purpose != "relay" {
			out = append(out, PortMappingEntry{Transport: string(m.Transport), Ports: fmt.Sprint(m.Port.Port), Purpose: m.Purpose, Expires: rfc3339(m.Expires)})
			continue
		}
		if relay == nil {
			relay, first, relayExpires = &PortMappingEntry{Transport: string(m.Transport), Purpose: m.Purpose}, m.Port.Port, m.Expires
		}
		last = m.Port.Port
		if !m.Expires.IsZero() && m.Expires.Before(relayExpires) {
			relayExpires = m.Expires
		}
	}
	if relay != nil {
		relay.Ports, relay.Expires = fmt.Sprintf("%d-%d", first, last), rfc3339(relayExpires)
		out = append(out, *relay)
	}
	return out
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
