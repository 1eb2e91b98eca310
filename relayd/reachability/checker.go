package reachability

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// Bounds on how often a check runs, whatever asks for it.
const (
	// MinGap is the least time between two checks: address changes in a
	// burst (a PPP reconnect, DHCP at boot) make one check, not many.
	MinGap = time.Minute
	// DefaultInterval re-checks on its own, so a router that changed
	// shows without a restart.
	DefaultInterval = time.Hour
	// NotReachableInterval is the interval while the ports are not
	// reachable (if shorter than the configured one): a donor who has just
	// forwarded them sees it within minutes.
	NotReachableInterval = 5 * time.Minute
)

// Config configures a Checker.
type Config struct {
	// Servers are the STUN servers (host:port) to check with, in order;
	// only these are ever sent to.
	Servers []string
	// Targets lists the ports to probe, asked at each check (the STUN
	// server may have stopped).
	Targets func() []Target
	// Forward names what to forward on the router ("UDP ports
	// 40000-40999 and 3478", config.Config.ForwardText), for the advice.
	Forward string
	// Interval between checks (DefaultInterval when 0; at least MinGap).
	Interval time.Duration
	// MinGap overrides the package's MinGap (tests only: it is the rate
	// limit the security notes promise).
	MinGap time.Duration
	Timing Timing // DefaultTiming when zero
	Logger *slog.Logger
	// OnReport, when set, is called with each new report.
	OnReport func(Report)
}

// Checker runs the reachability check at start, when the public address
// changes (Recheck) and every Interval (NotReachableInterval while not
// reachable, if shorter), never twice within MinGap, and
// keeps the last Report. Nothing a remote party sends can start a check
// or choose where it sends: the servers are the configured ones.
type Checker struct {
	cfg     Config
	log     *slog.Logger
	last    atomic.Pointer[Report]
	recheck chan struct{}
}

// New returns a Checker; Run does the checking.
func New(cfg Config) *Checker {
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.MinGap <= 0 {
		cfg.MinGap = MinGap
	}
	cfg.Interval = max(cfg.Interval, cfg.MinGap)
	if cfg.Timing.Tries <= 0 || cfg.Timing.FirstWait <= 0 {
		cfg.Timing = DefaultTiming
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Checker{cfg: cfg, log: cfg.Logger, recheck: make(chan struct{}, 1)}
	c.last.Store(&Report{Verdict: Pending, RelayPorts: Pending,
		Summary: "Checking whether the Internet can reach this relay…"})
	return c
}

// Report is the last check's outcome (Pending before the first ends).
func (c *Checker) Report() Report { return *c.last.Load() }

// Recheck asks for a check soon: at once, or MinGap after the last one.
// Requests while one is pending are merged.
func (c *Checker) Recheck() {
	select {
	case c.recheck <- struct{}{}:
	default:
	}
}

// Run checks until ctx ends.
func (c *Checker) Run(ctx context.Context) {
	if len(c.cfg.Servers) == 0 {
		// Nothing to check with: say so once, quietly.
		r := c.check(ctx)
		c.publish(r)
		c.log.Info("reachability not checked", "summary", r.Summary, "advice", r.Advice)
		<-ctx.Done()
		return
	}
	next := time.Now()
	var lastRun time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.recheck:
			soon := lastRun.Add(c.cfg.MinGap)
			if now := time.Now(); now.After(soon) {
				soon = now
			}
			if soon.Before(next) {
				next = soon
				timer.Reset(time.Until(next))
			}
			continue
		case <-timer.C:
		}
		lastRun = time.Now()
		r := c.check(ctx)
		if ctx.Err() != nil {
			return
		}
		checked := time.Now()
		next = checked.Add(c.interval(r.Verdict))
		r.CheckedAt, r.NextCheck = &checked, &next
		c.publish(r) // before the log line: who reads the log finds it in the status
		c.logReport(r)
		timer.Reset(time.Until(next))
	}
}

// interval is the time to the next check after one that found v.
func (c *Checker) interval(v Verdict) time.Duration {
	if v == NotReachable {
		return max(min(c.cfg.Interval, NotReachableInterval), c.cfg.MinGap)
	}
	return c.cfg.Interval
}

// publish makes r the last report.
func (c *Checker) publish(r Report) {
	c.last.Store(&r)
	if c.cfg.OnReport != nil {
		c.cfg.OnReport(r)
	}
}

func (c *Checker) logReport(r Report) {
	attrs := []any{"verdict", string(r.Verdict), "relay_ports", string(r.RelayPorts), "stun", string(r.STUN),
		"server", r.Server, "summary", r.Summary}
	if r.Advice != "" {
		attrs = append(attrs, "advice", r.Advice)
	}
	if r.Verdict == Reachable {
		c.log.Info("reachability checked", attrs...)
	} else {
		c.log.Warn("reachability checked", attrs...)
	}
}
