package portmap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/jnrelay/jnrelay/internal/netclass"
)

// MaxRelayPorts bounds the relay ports mapped: NAT-PMP, PCP and UPnP map
// one port a request (UPnP has no ranges), so a range of thousands would
// be thousands of requests at every renewal, and a home router's table
// is small (a few hundred entries). 256 ports are 64 channels, more
// calls than a home uplink carries.
const MaxRelayPorts = 256

// Defaults of Config.
const (
	DefaultLifetime = time.Hour
	// retryAfter is how long relayd waits before asking a router that
	// refused, or a network without a gateway, again.
	retryAfter = 5 * time.Minute
	// addressCheck bounds how long a changed external address goes
	// unnoticed between renewals (a PPP reconnect).
	addressCheck = time.Minute
	// stopTimeout bounds the deletion of every mapping at stop: a router
	// takes from milliseconds to half a second (miniupnpd on a busy
	// CPU) per mapping, and one that went away must not hold relayd's
	// exit; what is left lapses with its lease.
	stopTimeout = 8 * time.Second
)

// Config says what to map.
type Config struct {
	// Fixed are the single ports to map whatever happens (STUN, TURN),
	// before the relay range.
	Fixed []Port
	// RelayMin and RelayMax are the relay port range; ports are mapped
	// from the first even port up, four (a channel) at a time, at most
	// MaxRelayPorts, until the router refuses one.
	RelayMin, RelayMax int
	// Lifetime is the lease asked for (0 = DefaultLifetime); mappings are
	// renewed at half the lease granted.
	Lifetime time.Duration
	// Protocols to try, in order (nil = PCP, NAT-PMP, UPnP).
	Protocols []Protocol
	// Gateway finds the router and the local address to map to (nil =
	// DefaultGateway).
	Gateway func() (gateway, local netip.Addr, err error)
	// OnChange is called with the new state after each mapping, renewal
	// or failure, from the mapper's goroutine.
	OnChange func(State)
	Logger   *slog.Logger
}

// Mapping is one port mapped on the router.
type Mapping struct {
	Port
	Expires time.Time // zero: no lease (a permanent UPnP mapping)
}

// State is what the mapper holds, for the status and the data plane.
type State struct {
	// Protocol is how the mappings were made ("" while none is).
	Protocol Protocol
	Gateway  netip.Addr
	// External is the router's Internet-side address.
	External netip.Addr
	Mappings []Mapping
	// RelayFirst and RelayLast are the relay ports mapped (0 when none):
	// the data plane takes channels only there.
	RelayFirst, RelayLast int
	// Error says why nothing (or less than wanted) is mapped.
	Error string
}

// Mapper keeps relayd's ports mapped on the router until its Run ends.
type Mapper struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	state State
}

// New returns a Mapper; Run does the work.
func New(cfg Config) *Mapper {
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = DefaultLifetime
	}
	if cfg.Protocols == nil {
		cfg.Protocols = []Protocol{PCP, NATPMP, UPnP}
	}
	if cfg.Gateway == nil {
		cfg.Gateway = DefaultGateway
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Mapper{cfg: cfg, log: cfg.Logger}
}

// State returns a copy of the current state.
func (m *Mapper) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.state
	s.Mappings = append([]Mapping(nil), s.Mappings...)
	return s
}

func (m *Mapper) setState(s State) {
	m.mu.Lock()
	m.state = s
	m.mu.Unlock()
	if m.cfg.OnChange != nil {
		m.cfg.OnChange(s)
	}
}

// Run maps, renews and follows the external address until ctx ends,
// then deletes every mapping it made.
func (m *Mapper) Run(ctx context.Context) {
	var c client
	var st State
	defer func() {
		if c != nil {
			m.removeAll(c, st.Mappings)
		}
	}()
	lastErr := ""
	var renewAt time.Time
	for {
		switch {
		case c != nil && time.Now().Before(renewAt):
			// Between renewals: only the external address is read again.
			if ext, err := c.externalAddress(ctx); err == nil && ext != st.External {
				m.log.Info("router's external address changed", "from", st.External.String(), "to", ext.String())
				st.External = ext
				m.setState(st)
			}
		default:
			if c == nil {
				c, st = m.connect(ctx)
			}
			if c != nil {
				st = m.mapAll(ctx, c, st.Mappings)
				if len(st.Mappings) == 0 {
					c = nil // the router stopped mapping: look for it again
				}
			}
			if ctx.Err() != nil {
				return
			}
			m.setState(st)
			if c == nil {
				if st.Error != lastErr {
					m.log.Warn("the router maps no port for relayd: forward the ports on the router by hand, or calls from the Internet will fail",
						"err", st.Error, "retry_in", retryAfter.String())
				}
				lastErr, renewAt = st.Error, time.Now().Add(retryAfter)
			} else {
				lastErr, renewAt = "", time.Now().Add(renewIn(st.Mappings, m.cfg.Lifetime))
				m.log.Info("ports mapped on the router", "protocol", string(st.Protocol), "external_address", st.External.String(),
					"mappings", len(st.Mappings), "relay_ports", portRange(st.RelayFirst, st.RelayLast), "renew_in", time.Until(renewAt).Round(time.Second).String(),
					"refused", st.Error)
			}
		}
		wait := time.Until(renewAt)
		if c != nil {
			wait = min(wait, addressCheck)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, 0)):
		}
	}
}

func portRange(first, last int) string {
	if first == 0 {
		return "none"
	}
	return fmt.Sprintf("%d-%d", first, last)
}

// connect finds the gateway and the first protocol it answers.
func (m *Mapper) connect(ctx context.Context) (client, State) {
	gw, local, err := m.cfg.Gateway()
	if err != nil {
		return nil, State{Error: err.Error()}
	}
	st := State{Gateway: gw}
	if netclass.Of(local) == netclass.Public {
		st.Error = fmt.Sprintf("local address %s is public: no NAT to map through", local)
		return nil, st
	}
	var errs []error
	pcpRefused := false
	for _, p := range m.cfg.Protocols {
		if p == NATPMP && pcpRefused {
			errs = append(errs, errors.New("nat-pmp: not asked: the router's PCP server refused, and NAT-PMP is the same service"))
			continue
		}
		c, err := m.probe(ctx, p, gw, local)
		if err == nil {
			m.log.Info("router answers port mapping", "protocol", string(p), "gateway", gw.String())
			return c, st
		}
		var refusal pcpRefusal
		pcpRefused = pcpRefused || (p == PCP && errors.As(err, &refusal))
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	st.Error = errors.Join(errs...).Error()
	return nil, st
}

// probe returns a client for protocol p if the gateway speaks it. PCP has
// no request without a side effect, so it is probed by mapping the first
// port, which mapAll then renews.
func (m *Mapper) probe(ctx context.Context, p Protocol, gw, local netip.Addr) (client, error) {
	switch p {
	case PCP:
		c := newPCPClient(gw, local)
		if _, err := c.add(ctx, m.firstPort(), m.cfg.Lifetime); err != nil {
			return nil, err
		}
		return c, nil
	case NATPMP:
		c := newNATPMPClient(gw)
		if _, err := c.externalAddress(ctx); err != nil {
			return nil, err
		}
		return c, nil
	case UPnP:
		c, refused, err := discoverUPnP(ctx, gw, local)
		for _, r := range refused {
			m.log.Warn("refused an answer that is not the gateway's", "err", r)
		}
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	return nil, fmt.Errorf("unknown protocol %q", p)
}

// wanted lists every port to map, in order: the fixed ones, then the
// relay range from its first even port, at most MaxRelayPorts.
func (m *Mapper) wanted() (fixed, relay []Port) {
	fixed = m.cfg.Fixed
	first := m.cfg.RelayMin + m.cfg.RelayMin%2
	for p := first; p+3 <= m.cfg.RelayMax && len(relay) < MaxRelayPorts; p++ {
		relay = append(relay, Port{Transport: UDP, Port: p, Purpose: "relay"})
	}
	relay = relay[:len(relay)/4*4]
	return fixed, relay
}

func (m *Mapper) firstPort() Port {
	fixed, relay := m.wanted()
	if len(fixed) > 0 {
		return fixed[0]
	}
	return relay[0]
}

// mapAll (re)maps every wanted port through c. The relay range is
// mapped a channel (four ports) at a time and stops at the first port
// the router refuses; the ports of a partly mapped channel, and any the
// last round held beyond the new end, are given back.
func (m *Mapper) mapAll(ctx context.Context, c client, held []Mapping) State {
	gw, _, _ := m.cfg.Gateway()
	st := State{Protocol: c.protocol(), Gateway: gw}
	fixed, relay := m.wanted()
	var refusals []error
	add := func(p Port) error {
		lease, err := c.add(ctx, p, m.cfg.Lifetime)
		if err != nil {
			return err
		}
		mp := Mapping{Port: p}
		if lease > 0 {
			mp.Expires = time.Now().Add(lease)
		}
		st.Mappings = append(st.Mappings, mp)
		return nil
	}
	for _, p := range fixed {
		if err := add(p); err != nil {
			refusals = append(refusals, err)
			if !errors.Is(err, errRefused) {
				return m.failed(st, refusals)
			}
		}
	}
	for i := 0; i < len(relay); i += 4 {
		before := len(st.Mappings)
		var err error
		for _, p := range relay[i : i+4] {
			if err = add(p); err != nil {
				break
			}
		}
		if err != nil {
			for _, mp := range st.Mappings[before:] {
				c.remove(ctx, mp.Port)
			}
			st.Mappings = st.Mappings[:before]
			refusals = append(refusals, err)
			break
		}
		st.RelayFirst, st.RelayLast = relay[0].Port, relay[i+3].Port
	}
	m.removeStale(ctx, c, held, st.Mappings)
	if len(st.Mappings) == 0 {
		return m.failed(st, refusals)
	}
	ext, err := c.externalAddress(ctx)
	if err != nil {
		refusals = append(refusals, err)
	}
	st.External = ext
	if len(refusals) > 0 {
		st.Error = errors.Join(refusals...).Error()
	}
	return st
}

// failed is the state of a round that mapped nothing.
func (m *Mapper) failed(st State, errs []error) State {
	st.Mappings, st.RelayFirst, st.RelayLast = nil, 0, 0
	st.Error = errors.Join(errs...).Error()
	return st
}

// removeStale gives back the ports held before and not held now.
func (m *Mapper) removeStale(ctx context.Context, c client, before, now []Mapping) {
	keep := map[Port]bool{}
	for _, mp := range now {
		keep[mp.Port] = true
	}
	for _, mp := range before {
		if !keep[mp.Port] {
			c.remove(ctx, mp.Port)
		}
	}
}

// removeAll deletes the mappings at stop, within stopTimeout in all.
func (m *Mapper) removeAll(c client, held []Mapping) {
	if len(held) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	removed := 0
	var lastErr error
	for _, mp := range held {
		if ctx.Err() != nil {
			break
		}
		if err := c.remove(ctx, mp.Port); err != nil {
			lastErr = err
			continue
		}
		removed++
	}
	if lastErr != nil || removed < len(held) {
		m.log.Warn("port mappings not all deleted: the router drops them when their lease ends",
			"deleted", removed, "held", len(held), "err", lastErr)
	} else {
		m.log.Info("port mappings deleted", "protocol", string(c.protocol()), "count", removed)
	}
	m.setState(State{})
}

// renewIn is when the mappings need renewing: at half the shortest
// lease granted, at least a second; mappings without a lease are made
// again at half the lifetime asked for (a router that restarted forgot
// them).
func renewIn(held []Mapping, lifetime time.Duration) time.Duration {
	wait := lifetime / 2
	now := time.Now()
	for _, mp := range held {
		if !mp.Expires.IsZero() {
			wait = min(wait, mp.Expires.Sub(now)/2)
		}
	}
	return max(wait, time.Second)
}
