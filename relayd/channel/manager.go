package channel

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jnrelay/jnrelay/internal/randid"
)

// newID returns a channel id: 128 random bits, unguessable, as lowercase
// hex, a valid XML Nmtoken.
func newID() string { return randid.Hex(16) }

// Config configures a Manager: the Settings Reconfigure may change later,
// and what is fixed for its life.
type Config struct {
	Settings
	Listen netip.Addr // address the relay ports bind to (unspecified = all)
	// Workers is the number of threads serving relay ports (each an epoll
	// loop); 0 = one per CPU the Go runtime may use (GOMAXPROCS).
	Workers int
	// Sockets is how relay ports are received: a socket per port (the
	// zero value), steered from one socket per worker through a BPF
	// sk_lookup program (steered.go; only the eBPF fast path can serve
	// it, and New fails when the host cannot steer), or auto
	// (chooseSockets).
	Sockets SocketsMode
	// GSO sends a hot flow's batch of equal-size datagrams as one UDP
	// segmentation offload message (kernel.SendBatch.SendSegmented); set
	// it where kernel.Detect reports GSO. Per-port sockets only.
	GSO bool
	// OffloadSocket is the offload broker's unix socket (kernel/offload):
	// the fast path's table is opened through it first, so relayd needs
	// no capability for it. Empty = relayd opens the table itself.
	OffloadSocket string
	// PublicAddr returns the address the relay advertises (invalid while
	// unknown): whether it is public decides which peers are permitted.
	PublicAddr func() netip.Addr
	// PublicAddr6, when set, returns the relay's public IPv6 address
	// (invalid while none): one of its own, refused as a peer at the
	// relay's live ports like the others.
	PublicAddr6 func() netip.Addr
	Logger      *slog.Logger
	// OnEnd is called once for every channel that ends, after its ports are
	// released. It must not block for long.
	OnEnd func(End)
}

// DefaultMaxPPS is the default packet-rate ceiling per relay port: an
// order of magnitude above a video call's packet rate.
const DefaultMaxPPS = 2000

// Manager owns the port pool and every live channel: their lifecycle
// (this file), the settings Reconfigure changes (settings.go), the fast
// path's switching (fastpath_control.go) and the figures read from them
// (totals.go). How datagrams reach the channels is its transport's
// (transport.go), chosen once in New.
type Manager struct {
	cfg Config // the Settings part guarded by mu
	sh  *shared
	tr  transport

	workers []*worker
	next    atomic.Uint32 // round-robin worker choice
	stop    atomic.Bool
	stopped sync.Once
	closing chan struct{} // closed when the workers stop; releases a wedged worker
	wedged  atomic.Bool   // test hook: workers hang (see Wedge)
	checkMu sync.Mutex    // one Check at a time
	sockets SocketsChoice // the transport running, and why auto chose it

	fpMu     sync.Mutex     // one change of fast path at a time
	fpCounts fastPathCounts // outlive each fast path across Reconfigure

	mu       sync.Mutex
	pool     *portPool
	channels map[string]*Channel
	ended    Stats // counters of channels that already ended
	// endedServed counts the channels that ended having served a call
	// (Stats.Served).
	endedServed uint64
	closed      bool
	draining    bool
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
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	sh := &shared{log: cfg.Logger, ports: newPortTable(pool.first, pool.last()), openers: openers(cfg.OffloadSocket)}
	sh.shields.init()
	maxFlows := pool.size() * portsPerChannel
	m := &Manager{sh: sh, pool: pool, channels: make(map[string]*Channel), closing: make(chan struct{})}
	auto, err := m.pickSockets(cfg, maxFlows)
	if err != nil {
		return nil, err
	}
	cfg.Sockets = m.sockets.Mode
	closeAuto := func() {
		if auto.fp != nil {
			auto.fp.close()
		}
	}
	tr, err := newTransport(cfg, sh, maxFlows)
	if err != nil {
		closeAuto()
		return nil, err
	}
	if !tr.socketPerPort() {
		if cfg.FastPath.isNftables() {
			return nil, errSteeredFastPath
		}
		cfg.Listen = cfg.Listen.Unmap() // the steering program matches IPv4
	}
	sh.listen = cfg.Listen
	m.cfg, m.tr = cfg, tr
	sh.guard = newSprayGuard(orDefault(cfg.SprayThreshold, DefaultSprayThreshold), sh.log, m.evictSprayer)
	m.refreshPeers()
	for i := range cfg.Workers {
		w, err := newWorker(i, tr, sh.log)
		if err != nil {
			closeAuto()
			m.stopWorkers()
			return nil, fmt.Errorf("data plane worker: %w", err)
		}
		m.workers = append(m.workers, w)
		go w.run(&m.stop, &m.wedged, m.closing)
	}
	if err := tr.cover(pool.first, pool.last()); err != nil {
		closeAuto()
		m.stopWorkers()
		return nil, err
	}
	m.setTotalKbps(cfg.TotalKbps)
	// m.cfg.FastPath is the mode in force, as setFastPath keeps it: under
	// a relay-wide cap that is off, so that lifting the cap later opens
	// the configured one.
	m.cfg.FastPath = fastPathUnder(cfg.FastPath, cfg.TotalKbps)
	fp := auto.fp // opened while choosing the sockets, if it was
	if !auto.opened {
		if fp, err = openFastPath(sh, &m.fpCounts, m.cfg.FastPath, maxFlows, tr.socketPerPort()); err != nil {
			m.stopWorkers()
			return nil, err
		}
	}
	if fp != nil {
		sh.fp.Store(fp)
	}
	go m.shieldLoop()
	return m, nil
}

// Sockets is how the relay ports are received, and for
// channel.sockets auto why.
func (m *Manager) Sockets() SocketsChoice { return m.sockets }

// stopWorkers ends every worker goroutine and releases the pollers.
func (m *Manager) stopWorkers() {
	m.stopped.Do(func() {
		m.tr.stop()
		m.stop.Store(true)
		close(m.closing)
		for _, w := range m.workers {
			w.poller.Wake()
		}
		for _, w := range m.workers {
			<-w.done
			w.close()
		}
	})
}

// Allocate opens a new channel on four free ports. It fails with
// ErrPoolExhausted when no block is free (or none can be bound), and with
// ErrDraining after Drain.
func (m *Manager) Allocate() (Info, error) {
	id := newID()
	m.mu.Lock()
	pool, cfg, draining := m.pool, m.cfg, m.draining
	m.mu.Unlock()
	if draining {
		return Info{}, ErrDraining
	}
	info := Info{ID: id, Expire: cfg.Expire, MaxKbps: cfg.MaxKbps}
	var c *Channel
	_, err := takeBound(pool, m.sh.log, "allocate channel", randomBlock, func(base int) error {
		info.LocalPort, info.RemotePort = base, base+2
		c = newChannel(base, info, cfg.LatchGrace, m.sh)
		return m.tr.openPorts(c)
	})
	if err != nil {
		return Info{}, err
	}
	c.pool = pool
	if pps := orDefault(cfg.MaxPPS, DefaultMaxPPS); pps > 0 {
		c.ppsInterval, c.ppsBurst = int64(time.Second)/int64(pps), int64(time.Second/2)
	}
	// Make the ports servable before the channel becomes visible. A
	// worker finds the channel through the port table (an atomic
	// store and load), which orders the writes above before its
	// reads; the poller registration orders nothing for Go.
	c.newExpiryTimer(func(c *Channel) { m.end(c, EndExpired) })
	for _, sd := range c.sides() {
		m.sh.ports.set(sd)
	}
	err = m.tr.attach(m.workers[m.next.Add(1)%uint32(len(m.workers))], c)
	m.mu.Lock()
	if err == nil && m.closed {
		err = errors.New("data plane is shut down")
	}
	if err == nil && m.draining {
		err = ErrDraining // Drain came while the ports were opened
	}
	if err != nil {
		m.mu.Unlock()
		m.discard(c)
		return Info{}, fmt.Errorf("allocate channel: %w", err)
	}
	m.channels[id] = c
	m.mu.Unlock()
	c.armExpiry()
	m.sh.log.Info("channel allocated", "channel", id, "localport", info.LocalPort, "remoteport", info.RemotePort)
	return info, nil
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
	if m.channels[c.info.ID] != c || c.ending.Load() {
		m.mu.Unlock()
		return false
	}
	c.ending.Store(true)
	m.mu.Unlock()

	// Out of the kernel before the sockets close; an expired channel was
	// idle by fresh counters, the others take the kernel's last figures.
	if fp := m.sh.fp.Load(); fp != nil {
		fp.retire(c, reason != EndExpired)
	}
	m.release(c)
	e := End{Info: c.info, Reason: reason, Duration: time.Since(c.created), Stats: c.stats.snapshot()}
	// Move the final counters from live to ended in one step so Totals
	// never counts them twice or not at all.
	m.mu.Lock()
	delete(m.channels, c.info.ID)
	m.ended.add(e.Stats)
	if e.Stats.Served() {
		m.endedServed++
	}
	m.mu.Unlock()
	c.pool.put(c.info.LocalPort)
	m.sh.log.Info("channel ended", e.logArgs()...)
	if m.cfg.OnEnd != nil {
		m.cfg.OnEnd(e)
	}
	return true
}

// release closes c's ports and takes them out of the table; the caller
// returns the block to the pool.
func (m *Manager) release(c *Channel) {
	c.close(m.tr)
	for _, sd := range c.sides() {
		m.sh.ports.clear(sd)
	}
}

// discard undoes an allocation that never became visible.
func (m *Manager) discard(c *Channel) {
	if fp := m.sh.fp.Load(); fp != nil {
		fp.retire(c, false)
	}
	m.release(c)
	c.pool.put(c.info.LocalPort)
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
	// One last counter read and the table goes, before any socket closes:
	// 10,000 offloaded channels cost one dump, not one each.
	m.fpMu.Lock()
	if fp := m.sh.fp.Swap(nil); fp != nil {
		fp.close()
	}
	m.fpMu.Unlock()
	for _, c := range live {
		m.end(c, EndShutdown)
	}
	m.stopWorkers()
}
