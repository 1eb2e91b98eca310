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

	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/jnrelay/jnrelay/internal/randid"
	"github.com/jnrelay/jnrelay/kernel"
)

// newID returns a channel id: 128 random bits, unguessable, as lowercase
// hex, a valid XML Nmtoken.
func newID() string { return randid.Hex(16) }

// Config configures a Manager.
type Config struct {
	Listen     netip.Addr    // address the relay ports bind to (unspecified = all)
	PortMin    int           // relay port range, inclusive
	PortMax    int           //
	Expire     time.Duration // inactivity after which a channel dies
	LatchGrace time.Duration // silence after which a latch may move to a new source
	MaxKbps    int           // per-direction bandwidth limit per channel; 0 = none
	// TotalKbps caps all channels together, both directions; 0 = none.
	// While set, the fast path stays off (see totalcap.go).
	TotalKbps int
	// Workers is the number of threads serving relay ports (each an epoll
	// loop); 0 = one per CPU the Go runtime may use (GOMAXPROCS).
	Workers int
	// FastPath hands latched legs to the kernel (kernel/nft); "" = off.
	// With FastPathNftables, New fails when the host cannot run it.
	FastPath FastPathMode
	// Steered serves the port range from one socket per worker through a
	// BPF sk_lookup program instead of a socket per port (steered.go).
	// The fast path is then off; New fails when the host cannot steer.
	Steered bool
	// GSO sends a hot flow's batch of equal-size datagrams as one UDP
	// segmentation offload message (kernel.SendBatch.SendSegmented); set
	// it where kernel.Detect reports GSO. Per-port sockets only.
	GSO bool
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
	// PublicAddr returns the address the relay advertises (invalid while
	// unknown): whether it is public decides which peers are permitted.
	PublicAddr func() netip.Addr
	Logger     *slog.Logger
	// OnEnd is called once for every channel that ends, after its ports are
	// released. It must not block for long.
	OnEnd func(End)
}

// DefaultMaxPPS is the default packet-rate ceiling per relay port: an
// order of magnitude above a video call's packet rate.
const DefaultMaxPPS = 2000

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

// EndReasons lists every EndReason.
func EndReasons() []EndReason { return []EndReason{EndExpired, EndKilled, EndShutdown} }

// Manager owns the port pool and every live channel.
type Manager struct {
	cfg  Config
	pool *portPool
	log  *slog.Logger

	// ports maps a port to its side while a channel holds it; workers
	// look events up here.
	ports   *portTable
	workers []*worker
	bufSize int           // per-socket buffer size for the whole range
	next    atomic.Uint32 // round-robin worker choice
	stop    atomic.Bool
	stopped sync.Once
	closing chan struct{}                // closed when the workers stop; releases a wedged worker
	wedged  atomic.Bool                  // test hook: workers hang (see Wedge)
	total   atomic.Pointer[rate.Limiter] // relay-wide bandwidth cap; nil = none
	checkMu sync.Mutex                   // one Check at a time

	// shielded are the channels with a port's source filter up
	// (shield.go); shieldsWork turns false once attaching one failed.
	shieldMu    sync.Mutex
	shielded    map[*Channel]struct{}
	shieldsWork atomic.Bool

	// steerings are the attached port steering programs (steered mode);
	// unrouted counts steered datagrams for ports no channel holds.
	steerMu   sync.Mutex
	steerings []*kernel.Steering
	unrouted  atomic.Uint64

	// gsoSaved counts datagrams that went out inside another's UDP GSO
	// message: the UDP and IP layers they did not cross on their own.
	gsoSaved atomic.Uint64

	// fp is the in-kernel fast path, nil when off or unavailable;
	// fpCounts outlive it across Reconfigure.
	fp       atomic.Pointer[fastPath]
	fpMu     sync.Mutex // one change of fast path at a time
	fpCounts fastPathCounts

	// peers is the rule for sources a port may latch (peers.go), rebuilt
	// when the relay's addresses change; guard watches for sprayers.
	peers atomic.Pointer[peerRule]
	guard *sprayGuard

	mu       sync.Mutex
	channels map[string]*Channel
	ended    Stats // counters of channels that already ended
	closed   bool
	draining bool
}

// errSteeredFastPath refuses the nftables fast path with steered ports.
var errSteeredFastPath = errors.New("the nftables fast path needs a socket per port: it cannot be combined with steered ports")

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
	if cfg.Steered {
		if !cfg.Listen.Unmap().Is4() {
			return nil, fmt.Errorf("steered relay ports need an IPv4 listen address, not %s", cfg.Listen)
		}
		if cfg.FastPath == FastPathNftables {
			return nil, errSteeredFastPath
		}
		cfg.Listen = cfg.Listen.Unmap()
	}
	m := &Manager{cfg: cfg, pool: pool, log: cfg.Logger, channels: make(map[string]*Channel), closing: make(chan struct{}),
		ports: newPortTable(pool.first, pool.last()), bufSize: kernel.BufferSizeFor(pool.size() * portsPerChannel)}
	if !cfg.Steered {
		checkFileLimit(pool.size()*portsPerChannel, m.log)
	}
	m.shielded = make(map[*Channel]struct{})
	m.shieldsWork.Store(true)
	m.guard = newSprayGuard(orDefault(cfg.SprayThreshold, DefaultSprayThreshold), m.log, m.evictSprayer)
	m.refreshPeers()
	for range cfg.Workers {
		w, err := newWorker(m)
		if err != nil {
			m.stopWorkers()
			return nil, fmt.Errorf("data plane worker: %w", err)
		}
		m.workers = append(m.workers, w)
		go w.run(&m.stop)
	}
	if cfg.Steered {
		if err := m.steer(pool.first, pool.last()); err != nil {
			m.stopWorkers()
			return nil, fmt.Errorf("steered relay ports: %w", err)
		}
	}
	m.setTotalKbps(cfg.TotalKbps)
	fp, err := openFastPath(m, fastPathUnder(cfg.FastPath, cfg.TotalKbps), cfg.Listen, pool.size()*portsPerChannel, cfg.Steered)
	if err != nil {
		m.stopWorkers()
		return nil, err
	}
	if fp != nil {
		m.fp.Store(fp)
	}
	go m.shieldLoop()
	return m, nil
}

// stopWorkers ends every worker goroutine and releases the pollers.
func (m *Manager) stopWorkers() {
	m.stopped.Do(func() {
		m.unsteer()
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

// checkFileLimit warns when the open-file limit cannot hold every relay
// port (plus room for the rest of the daemon). Go raises the soft limit to
// the hard limit at start, so only the hard limit matters.
func checkFileLimit(sockets int, log *slog.Logger) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if need := uint64(sockets) + 256; lim.Cur < need {
		log.Warn("open-file limit below what the port range needs: channels will fail to allocate before the pool is full; raise LimitNOFILE / ulimit -n",
			"limit", lim.Cur, "needed", need)
	}
}

// Capacity is the number of channels the port range can hold.
func (m *Manager) Capacity() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pool.size()
}

// Settings are what Reconfigure can change while channels are live.
type Settings struct {
	PortMin, PortMax int
	Expire           time.Duration
	LatchGrace       time.Duration
	MaxKbps          int
	TotalKbps        int
	FastPath         FastPathMode
	MaxPPS           int
	AllowPeers       []netip.Prefix
	SprayThreshold   int
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
		m.ports.cover(pool.first, pool.last())
		if m.cfg.Steered {
			if err := m.steer(pool.first, pool.last()); err != nil {
				return fmt.Errorf("steer the new port range: %w", err)
			}
		} else {
			checkFileLimit(pool.size()*portsPerChannel, m.log)
		}
	}
	if s.TotalKbps < 0 {
		return fmt.Errorf("invalid total bandwidth cap %d kbps", s.TotalKbps)
	}
	if m.cfg.Steered && s.FastPath == FastPathNftables {
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
	m.guard.threshold.Store(int32(orDefault(s.SprayThreshold, DefaultSprayThreshold)))
	m.refreshPeers()
	m.log.Info("data plane reconfigured", "ports", fmt.Sprintf("%d-%d", s.PortMin, s.PortMax),
		"expire", s.Expire.String(), "latch_grace", s.LatchGrace.String(), "max_kbps", s.MaxKbps, "fast_path", string(s.FastPath))
	return nil
}

// setFastPath switches the fast path to mode, sized for maxFlows flows.
// Turning it off deletes the table: every offloaded leg goes back to
// userspace, where its latches were kept. Turning it on offers every
// latched leg to the kernel. A new mode, or a larger port range, opens
// it anew.
func (m *Manager) setFastPath(mode FastPathMode, maxFlows int) error {
	if mode == "" {
		mode = FastPathOff
	}
	m.fpMu.Lock()
	defer m.fpMu.Unlock()
	m.mu.Lock()
	cur := m.cfg.FastPath
	m.mu.Unlock()
	if cur == "" {
		cur = FastPathOff
	}
	old := m.fp.Load()
	if mode == cur && (old == nil || old.capacity == 0 || old.capacity >= maxFlows) {
		return nil
	}
	// Close before opening: two nftables fast paths would share one
	// table. The offloaded legs return to userspace meanwhile.
	if old != nil {
		m.fp.Store(nil)
		old.close()
	}
	fp, err := openFastPath(m, mode, m.cfg.Listen, maxFlows, m.cfg.Steered)
	if err != nil {
		if old != nil {
			// Keep what ran before, if it still can.
			if fp, rerr := openFastPath(m, cur, m.cfg.Listen, old.capacity, m.cfg.Steered); rerr == nil && fp != nil {
				m.fp.Store(fp)
				m.offerLive(fp)
			}
		}
		return err
	}
	if fp != nil {
		m.fp.Store(fp)
		m.offerLive(fp)
	}
	m.mu.Lock()
	m.cfg.FastPath = mode
	m.mu.Unlock()
	return nil
}

// offerLive queues every live channel's legs for fp.
func (m *Manager) offerLive(fp *fastPath) {
	for _, c := range m.live() {
		for l := range c.legs {
			fp.enqueue(c, l)
		}
	}
}

// FastPath describes the in-kernel fast path for metrics.
func (m *Manager) FastPath() FastPathStats {
	return m.fpCounts.stats(m.fp.Load() != nil)
}

// live returns the live channels.
func (m *Manager) live() []*Channel {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Channel, 0, len(m.channels))
	for _, c := range m.channels {
		out = append(out, c)
	}
	return out
}

// isLive reports whether c may still have legs offloaded: it is not
// ending and its sockets are open.
func (m *Manager) isLive(c *Channel) bool {
	m.mu.Lock()
	ending := c.ending
	m.mu.Unlock()
	c.mu.RLock()
	defer c.mu.RUnlock()
	return !ending && !c.closed
}

// refreshFastPath credits what the kernel forwarded to the channels, so
// figures read now are exact.
func (m *Manager) refreshFastPath() {
	if fp := m.fp.Load(); fp != nil {
		fp.refresh(0)
	}
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
	// Ports held by other programs are skipped; the pool keeps them free so
	// they are tried again later.
	busy := map[int]bool{}
	for {
		base, err := pool.take(busy)
		if err != nil {
			if len(busy) > 0 {
				return Info{}, fmt.Errorf("%w (%d blocks busy in other programs)", err, len(busy))
			}
			return Info{}, err
		}
		info.LocalPort, info.RemotePort = base, base+2
		c, err := openChannel(cfg.Listen, base, info, cfg.LatchGrace, m.bufSize, cfg.Steered)
		if err != nil {
			pool.put(base)
			if isAddrInUse(err) {
				m.log.Warn("relay ports busy, trying another block", "port", base, "err", err)
				busy[base] = true
				continue
			}
			return Info{}, fmt.Errorf("allocate channel: %w", err)
		}
		c.pool = pool
		if pps := orDefault(cfg.MaxPPS, DefaultMaxPPS); pps > 0 {
			c.ppsInterval, c.ppsBurst = int64(time.Second)/int64(pps), int64(time.Second/2)
		}
		// The worker is chosen before the ports are published in the port
		// table: a worker finds the channel through the table (an atomic
		// store and load), so that is what orders this write before its
		// reads; the epoll registration below orders nothing for Go.
		c.worker = m.workers[m.next.Add(1)%uint32(len(m.workers))]
		// Make the ports servable before the channel becomes visible.
		c.newExpiryTimer(func(c *Channel) { m.end(c, EndExpired) })
		for _, sd := range c.sides() {
			m.ports.set(sd)
		}
		err = c.worker.add(c)
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

	// Out of the kernel before the sockets close; an expired channel was
	// idle by fresh counters, the others take the kernel's last figures.
	if fp := m.fp.Load(); fp != nil {
		fp.retire(c, reason != EndExpired)
	}
	m.release(c)
	e := End{Info: c.info, Reason: reason, Duration: time.Since(c.created), Stats: c.stats.snapshot()}
	// Move the final counters from live to ended in one step so Totals
	// never counts them twice or not at all.
	m.mu.Lock()
	delete(m.channels, c.info.ID)
	m.ended.add(e.Stats)
	m.mu.Unlock()
	c.pool.put(c.info.LocalPort)
	m.log.Info("channel ended", "channel", e.ID, "reason", string(reason), "seconds", int(e.Duration.Seconds()),
		"packets_local_to_remote", e.Stats.Packets[LocalToRemote], "packets_remote_to_local", e.Stats.Packets[RemoteToLocal],
		"bytes_local_to_remote", e.Stats.Bytes[LocalToRemote], "bytes_remote_to_local", e.Stats.Bytes[RemoteToLocal],
		"kernel_packets_local_to_remote", e.Stats.Offloaded[LocalToRemote], "kernel_packets_remote_to_local", e.Stats.Offloaded[RemoteToLocal],
		"dropped_peer_not_latched", e.Stats.Dropped[DropPeerNotLatched], "dropped_foreign_source", e.Stats.Dropped[DropForeignSource],
		"dropped_rate_limited", e.Stats.Dropped[DropRateLimited], "dropped_oversize", e.Stats.Dropped[DropOversize],
		"dropped_send_error", e.Stats.Dropped[DropSendError],
		"dropped_foreign_source_kernel", e.Stats.Dropped[DropForeignSourceKernel], "dropped_forbidden_peer", e.Stats.Dropped[DropForbiddenPeer],
		"dropped_sprayer", e.Stats.Dropped[DropSprayer], "dropped_unconfirmed_peer", e.Stats.Dropped[DropUnconfirmedPeer],
		"dropped_packet_ceiling", e.Stats.Dropped[DropPacketCeiling], "dropped_kernel", e.Stats.KernelDrops, "relatched", e.Stats.Relatched)
	if m.cfg.OnEnd != nil {
		m.cfg.OnEnd(e)
	}
	return true
}

// release closes c's sockets and takes its ports out of the table; the
// caller returns the block to the pool.
func (m *Manager) release(c *Channel) {
	c.close()
	for _, sd := range c.sides() {
		m.ports.clear(sd)
	}
}

// discard undoes an allocation that never became visible.
func (m *Manager) discard(c *Channel) {
	if fp := m.fp.Load(); fp != nil {
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
	if fp := m.fp.Swap(nil); fp != nil {
		fp.close()
	}
	m.fpMu.Unlock()
	for _, c := range live {
		m.end(c, EndShutdown)
	}
	m.stopWorkers()
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
	m.refreshFastPath()
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
	// Segmented counts datagrams sent inside another's UDP GSO message
	// (Config.GSO): hot flows' batches.
	Segmented uint64
}

// Totals sums the counters of every channel, live or ended.
func (m *Manager) Totals() Totals {
	m.refreshFastPath()
	m.mu.Lock()
	t := Totals{Active: len(m.channels), Capacity: m.pool.size(), Stats: m.ended}
	for _, c := range m.channels {
		t.Stats.add(c.stats.snapshot())
	}
	m.mu.Unlock()
	t.Stats.Dropped[DropNoChannel] += m.unrouted.Load()
	t.Segmented = m.gsoSaved.Load()
	return t
}
