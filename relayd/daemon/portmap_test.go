package daemon

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/portmap"
)

func TestWantsPortMapping(t *testing.T) {
	cfg := config.Default()
	if !wantsPortMapping(cfg) {
		t.Fatal("the default configuration does not map ports")
	}
	for name, change := range map[string]func(*config.Config){
		"off":               func(c *config.Config) { c.PortMapping.Mode = config.PortMappingOff },
		"public_address":    func(c *config.Config) { c.PublicAddress = "198.51.100.7" },
		"loopback listener": func(c *config.Config) { c.ListenAddress = "127.0.0.1" },
	} {
		c := config.Default()
		change(&c)
		if wantsPortMapping(c) {
			t.Errorf("%s: ports would be mapped", name)
		}
	}
}

// TestDataPlaneNarrowedToMappedPorts: while the router maps part of the
// range, the data plane gives channels only there; the whole range comes
// back when the mapping goes.
func TestDataPlaneNarrowedToMappedPorts(t *testing.T) {
	d := &Daemon{}
	cfg := config.Default()
	if s := d.dataPlane(cfg); s.PortMin != 40000 || s.PortMax != 40999 {
		t.Fatalf("nothing mapped: %d-%d", s.PortMin, s.PortMax)
	}
	d.mapped.Store(&portmap.State{RelayFirst: 40000, RelayLast: 40255})
	if s := d.dataPlane(cfg); s.PortMin != 40000 || s.PortMax != 40255 {
		t.Fatalf("mapped 40000-40255: data plane %d-%d", s.PortMin, s.PortMax)
	}
	cfg.PortMapping.Mode = config.PortMappingOff
	if s := d.dataPlane(cfg); s.PortMax != 40999 {
		t.Fatalf("port mapping off: data plane %d-%d", s.PortMin, s.PortMax)
	}
}

func TestSummarizeMappings(t *testing.T) {
	at := time.Date(2026, 12, 6, 20, 0, 0, 0, time.UTC)
	ms := []portmap.Mapping{{Port: portmap.Port{Transport: portmap.UDP, Port: 3478, Purpose: "stun"}, Expires: at}}
	for p := 40000; p <= 40007; p++ {
		ms = append(ms, portmap.Mapping{Port: portmap.Port{Transport: portmap.UDP, Port: p, Purpose: "relay"}, Expires: at.Add(time.Duration(p-40000) * time.Second)})
	}
	got := summarize(ms)
	if len(got) != 2 || got[0] != (PortMappingEntry{Transport: "udp", Ports: "3478", Purpose: "stun", Expires: "2026-12-06T20:00:00Z"}) ||
		got[1] != (PortMappingEntry{Transport: "udp", Ports: "40000-40007", Purpose: "relay", Expires: "2026-12-06T20:00:00Z"}) {
		t.Fatalf("summary %+v", got)
	}
	if mapped := (&Daemon{}).mappedExternal(); mapped.IsValid() {
		t.Fatalf("no mapper, external %s", mapped)
	}
	d := &Daemon{}
	d.mapped.Store(&portmap.State{External: netip.MustParseAddr("198.51.100.7")})
	if mapped := d.mappedExternal(); mapped.IsValid() {
		t.Fatalf("nothing mapped, yet external %s advertised", mapped)
	}
}

// TestOwnFixedPorts: the router is asked for the single ports the
// firewall would open (config.InboundPorts), with the purposes the
// status shows, and for no port below 1024.
func TestOwnFixedPorts(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*config.Config)
		want []portmap.Port
	}{
		{"defaults", func(*config.Config) {}, []portmap.Port{{Transport: portmap.UDP, Port: 3478, Purpose: "stun"}}},
		{"no STUN", func(c *config.Config) { c.STUN.Enabled = false }, nil},
		{"TURN over UDP, TCP and TLS", func(c *config.Config) {
			c.TURN.Builtin = config.BuiltinTURN{Enabled: true, Port: 3479, TCP: true, TLSPort: 5349}
		}, []portmap.Port{
			{Transport: portmap.UDP, Port: 3478, Purpose: "stun"},
			{Transport: portmap.UDP, Port: 3479, Purpose: "turn"},
			{Transport: portmap.TCP, Port: 3479, Purpose: "turn"},
			{Transport: portmap.TCP, Port: 5349, Purpose: "turn-tls"},
		}},
		{"privileged ports left out", func(c *config.Config) {
			c.STUN.Port = 53
			c.TURN.Builtin = config.BuiltinTURN{Enabled: true, Port: 3479, TLSPort: 443}
		}, []portmap.Port{{Transport: portmap.UDP, Port: 3479, Purpose: "turn"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			tc.edit(&cfg)
			if got := ownFixedPorts(cfg); !slices.Equal(got, tc.want) {
				t.Errorf("ownFixedPorts = %+v, want %+v", got, tc.want)
			}
		})
	}
}
