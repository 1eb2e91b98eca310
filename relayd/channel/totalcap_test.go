package channel

import "testing"

// TestLiftedCapOpensFastPath: a relay started under a relay-wide
// bandwidth cap relays in userspace; lifting the cap opens the configured
// fast path, as it does for a relay started without one. (Started under a
// cap, the manager once remembered the configured mode as the one in
// force, so lifting the cap changed nothing.)
func TestLiftedCapOpensFastPath(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) { c.PortMin, c.PortMax = 27800, 27807; c.FastPath = FastPathAuto; c.TotalKbps = 160 })
	if m.FastPath().Active {
		t.Fatal("fast path active under a relay-wide cap")
	}
	if got := m.cfg.FastPath; got != FastPathOff {
		t.Fatalf("mode in force under a cap = %q, want off", got)
	}
	s := m.cfg.Settings
	s.FastPath, s.TotalKbps = FastPathAuto, 0
	if err := m.Reconfigure(s); err != nil {
		t.Fatal(err)
	}
	if got := m.cfg.FastPath; got != FastPathAuto {
		t.Fatalf("mode in force after the cap was lifted = %q, want auto", got)
	}
	// Where the host runs one (not on loopback), the table is installed.
	uncapped, _ := newTestManager(t, func(c *Config) { c.PortMin, c.PortMax = 27810, 27817; c.FastPath = FastPathAuto })
	if want := uncapped.FastPath().Active; m.FastPath().Active != want {
		t.Fatalf("fast path active = %v after the cap was lifted, %v for a relay started without one", m.FastPath().Active, want)
	}
}
