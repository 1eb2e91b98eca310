package channel

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// Config configures a Manager.
type Config struct {
	Listen     netip.Addr    // address the relay ports bind to (unspecified = all)
	PortMin    int           // relay port range, inclusive
	PortMax    int           //
	Expire     time.Duration // inactivity after which a channel dies
	LatchGrace time.Duration // silence after which a latch may move to a new source
	MaxKbps    int           // per-direction bandwidth limit per channel; 0 = none
	Logger     *slog.Logger
	// OnEnd is called once for every channel that ends, after its ports are
	// released. It must not block for long.
	OnEnd func(End)
}

// End reports a channel that ended.
type End struct {
	Info
	Reason   EndReason
	Duration time.Duration // from allocation to end
	Stats    Stats
}

// EndReason says why a channel ended.
type EndReason string

const (
	EndExpired  EndReason = "expired"  // idle for Expire
	EndKilled   EndReason = "killed"   // Kill was called
	EndShutdown EndReason = "shutdown" // Close was called
)

// Manager owns the port pool and every live channel.
type Manager struct {
	cfg  Config
	pool *portPool
	log  *slog.Logger

	mu       sync.Mutex
	channels map[string]*Channel
	ended    Stats // counters of channels that already ended
	closed   bool
}

// New validates cfg and returns a Manager with no channels.
func New(cfg Config) (*Manager, error) {
	pool, err := newPortPool(cfg.PortMin, cfg.PortMax)
	if err != nil {
		return nil, err
	}
	if cfg.Expire <= 0 {
		return nil, fmt.Errorf("channel expire must be positive, got %s", cfg.Expire)
	}
	if cfg.LatchGrace < 0 {
		return nil, fmt.Errorf("latch grace must not be negative, got %s", cfg.LatchGrace)
	}
	if !cfg.Listen.IsValid() {
		return nil, errors.New("listen address is not set")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, pool: pool, log: cfg.Logger, channels: make(map[string]*Channel)}, nil
}

// Capacity is the number of channels the port range can hold.
func (m *Manager) Capacity() int { return m.pool.size() }

// Allocate opens a new channel on four free ports. It fails with
// ErrPoolExhausted when no block is free (or none can be bound).
func (m *Manager) Allocate() (Info, error) {
	id, err := newID()
	if err != nil {
		return Info{}, err
	}
	info := Info{ID: id, Expire: m.cfg.Expire, MaxKbps: m.cfg.MaxKbps}
	// Ports held by other programs are skipped; the pool keeps them free so
	// they are tried again later.
	busy := map[int]bool{}
	for {
		base, err := m.pool.take(busy)
		if err != nil {
			if len(busy) > 0 {
				return Info{}, fmt.Errorf("%w (%d blocks busy in other programs)", err, len(busy))
			}
			return Info{}, err
		}
		info.LocalPort, info.RemotePort = base, base+2
		c, err := openChannel(m.cfg.Listen, base, info, m.cfg.LatchGrace)
		if err != nil {
			m.pool.put(base)
			if errors.Is(err, syscall.EADDRINUSE) {
				m.log.Warn("relay ports busy, trying another block", "port", base, "err", err)
				busy[base] = true
				continue
			}
			return Info{}, fmt.Errorf("allocate channel: %w", err)
		}
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			c.close()
			m.pool.put(base)
			return Info{}, errors.New("allocate channel: data plane is shut down")
		}
		m.channels[id] = c
		m.mu.Unlock()
		c.start(func(c *Channel) { m.end(c, EndExpired) })
		m.log.Info("channel allocated", "channel", id, "localport", info.LocalPort, "remoteport", info.RemotePort)
		return info, nil
	}
}

// Kill ends the channel with the given id; it reports whether it existed.
func (m *Manager) Kill(id string) bool {
	m.mu.Lock()
	c := m.channels[id]
	m.mu.Unlock()
	if c == nil {
		return false
	}
	return m.end(c, EndKilled)
}

// end removes c, releases its ports and reports it. Only the first caller
// for a channel does the work; it reports whether it was that caller.
func (m *Manager) end(c *Channel, reason EndReason) bool {
	m.mu.Lock()
	if m.channels[c.info.ID] != c || c.ending {
		m.mu.Unlock()
		return false
	}
	c.ending = true
	m.mu.Unlock()

	c.close()
	e := End{Info: c.info, Reason: reason, Duration: time.Since(c.created), Stats: c.stats.snapshot()}
	// Move the final counters from live to ended in one step so Totals
	// never counts them twice or not at all.
	m.mu.Lock()
	delete(m.channels, c.info.ID)
	m.ended.add(e.Stats)
	m.mu.Unlock()
	m.pool.put(c.info.LocalPort)
	m.log.Info("channel ended", "channel", e.ID, "reason", string(reason), "seconds", int(e.Duration.Seconds()),
		"packets_local_to_remote", e.Stats.Packets[LocalToRemote], "packets_remote_to_local", e.Stats.Packets[RemoteToLocal],
		"bytes_local_to_remote", e.Stats.Bytes[LocalToRemote], "bytes_remote_to_local", e.Stats.Bytes[RemoteToLocal],
		"dropped_peer_not_latched", e.Stats.Dropped[DropPeerNotLatched], "dropped_foreign_source", e.Stats.Dropped[DropForeignSource],
		"dropped_rate_limited", e.Stats.Dropped[DropRateLimited], "dropped_oversize", e.Stats.Dropped[DropOversize],
		"dropped_send_error", e.Stats.Dropped[DropSendError], "relatched", e.Stats.Relatched)
	if m.cfg.OnEnd != nil {
		m.cfg.OnEnd(e)
	}
	return true
}

// Close ends every channel and refuses new ones.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	live := make([]*Channel, 0, len(m.channels))
	for _, c := range m.channels {
		live = append(live, c)
	}
	m.mu.Unlock()
	for _, c := range live {
		m.end(c, EndShutdown)
	}
}

// Snapshot is the state of one live channel.
type Snapshot struct {
	Info
	Age        time.Duration
	Idle       time.Duration
	LocalPeer  netip.AddrPort // latched on the requester's RTP port, if any
	RemotePeer netip.AddrPort // latched on the other party's RTP port, if any
	Stats      Stats
}

// Channels returns a snapshot of every live channel.
func (m *Manager) Channels() []Snapshot {
	m.mu.Lock()
	live := make([]*Channel, 0, len(m.channels))
	for _, c := range m.channels {
		live = append(live, c)
	}
	m.mu.Unlock()
	out := make([]Snapshot, 0, len(live))
	for _, c := range live {
		local, remote := c.Latched()
		out = append(out, Snapshot{Info: c.info, Age: time.Since(c.created), Idle: c.idle(),
			LocalPeer: local, RemotePeer: remote, Stats: c.stats.snapshot()})
	}
	return out
}

// Totals are data-plane-wide figures.
type Totals struct {
	Active   int   // live channels
	Capacity int   // channels the port range holds
	Stats    Stats // counters of live and ended channels together
}

// Totals sums the counters of every channel, live or ended.
func (m *Manager) Totals() Totals {
	m.mu.Lock()
	t := Totals{Active: len(m.channels), Capacity: m.pool.size(), Stats: m.ended}
	for _, c := range m.channels {
		t.Stats.add(c.stats.snapshot())
	}
	m.mu.Unlock()
	return t
}

// newID returns 128 random bits as lowercase hex: unguessable and a valid
// XML Nmtoken.
func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate channel id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
