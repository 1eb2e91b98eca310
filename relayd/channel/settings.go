package channel

import (
	"fmt"
	"net/netip"
	"time"
)

// Settings are the data plane's settings that Reconfigure can change
// while channels are live; New takes them in Config.
type Settings struct {
	PortMin    int           // relay port range, inclusive
	PortMax    int           //
	Expire     time.Duration // inactivity after which a channel dies
	LatchGrace time.Duration // silence after which a latch may move to a new source
	MaxKbps    int           // per-direction bandwidth limit per channel; 0 = none
	// TotalKbps caps all channels together, both directions; 0 = none.
	// While set, the fast path stays off (see totalcap.go).
	TotalKbps int
	// FastPath hands latched legs to the kernel (kernel/tcfwd or
	// kernel/nft); "" = off. With FastPathEBPF or FastPathNftables, New
	// and Reconfigure fail when the host cannot run it.
	FastPath FastPathMode
	// MaxPPS is the packet-rate ceiling of each relay port, in datagrams
	// a second with half a second of burst: it stops a forwarding loop
	// (two relays latched to each other) within the burst. 0 =
	// DefaultMaxPPS; negative = none.
	MaxPPS int
	// AllowPeers are source addresses a port may latch whatever their
	// class (peers.go): a private network a public relay also serves.
	AllowPeers []netip.Prefix
	// SprayThreshold is how many distinct channels one source address may
	// touch as a sprayer does within 5 s before it is blocked
	// (sprayers.go). 0 = DefaultSprayThreshold; negative = detection off.
	SprayThreshold int
}

// Reconfigure applies new settings to channels allocated from now on;
// live channels keep their ports, expiry, grace and limit and are never
// interrupted (a channel outside a new port range finishes where it is).
// The listen address cannot change without a restart.
func (m *Manager) Reconfigure(s Settings) error {
	if s.Expire <= 0 || s.LatchGrace < 0 || s.MaxKbps < 0 {
		return fmt.Errorf("invalid channel settings: expire %s, grace %s, max kbps %d", s.Expire, s.LatchGrace, s.MaxKbps)
	}
	m.mu.Lock()
	rangeChanged := s.PortMin != m.cfg.PortMin || s.PortMax != m.cfg.PortMax
	m.mu.Unlock()
	var pool *portPool
	if rangeChanged {
		var err error
		if pool, err = newPortPool(s.PortMin, s.PortMax); err != nil {
			return err
		}
		m.sh.ports.cover(pool.first, pool.last())
		if err := m.tr.cover(pool.first, pool.last()); err != nil {
			return fmt.Errorf("cover the new port range: %w", err)
		}
	}
	if s.TotalKbps < 0 {
		return fmt.Errorf("invalid total bandwidth cap %d kbps", s.TotalKbps)
	}
	if !m.tr.socketPerPort() && s.FastPath.isNftables() {
		return errSteeredFastPath
	}
	m.mu.Lock()
	size := m.pool.size()
	m.mu.Unlock()
	if pool != nil {
		size = pool.size()
	}
	if err := m.setFastPath(fastPathUnder(s.FastPath, s.TotalKbps), size*portsPerChannel); err != nil {
		return err
	}
	m.setTotalKbps(s.TotalKbps)
	m.mu.Lock()
	if pool != nil {
		m.pool, m.cfg.PortMin, m.cfg.PortMax = pool, s.PortMin, s.PortMax
	}
	m.cfg.Expire, m.cfg.LatchGrace, m.cfg.MaxKbps = s.Expire, s.LatchGrace, s.MaxKbps
	m.cfg.MaxPPS, m.cfg.AllowPeers = s.MaxPPS, s.AllowPeers
	m.mu.Unlock()
	m.sh.guard.threshold.Store(int32(orDefault(s.SprayThreshold, DefaultSprayThreshold)))
	m.refreshPeers()
	m.sh.log.Info("data plane reconfigured", "ports", fmt.Sprintf("%d-%d", s.PortMin, s.PortMax),
		"expire", s.Expire.String(), "latch_grace", s.LatchGrace.String(), "max_kbps", s.MaxKbps, "fast_path", string(s.FastPath))
	return nil
}

// Capacity is the number of channels the port range can hold.
func (m *Manager) Capacity() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pool.size()
}
