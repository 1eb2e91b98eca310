package daemon

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Drain stops taking new channels and TURN allocations (requests are
// refused with service-unavailable and <services/> stops listing this
// relay) and waits until every live channel and allocation has ended or grace has passed, whichever comes
// first; ctx cuts the wait short. XMPP sessions stay up meanwhile, so
// requesters still hear of channels that end. It returns how many channels
// were still live when it stopped waiting (Close ends them).
func (d *Daemon) Drain(ctx context.Context, grace time.Duration) int {
	d.dp.Drain()
	live := d.liveCalls()
	d.log.Info("draining: no new channels", "live", live, "grace", grace.String())
	if live == 0 {
		return 0
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-deadline.C:
			live = d.liveCalls()
			d.log.Info("drain grace over", "live", live)
			return live
		case <-ctx.Done():
			live = d.liveCalls()
			d.log.Info("drain cut short", "live", live)
			return live
		case <-tick.C:
			if live = d.liveCalls(); live == 0 {
				d.log.Info("drained: every call has ended")
				return 0
			}
		}
	}
}

// Draining reports whether Drain was called.
func (d *Daemon) Draining() bool { return d.dp.Draining() }

// Check is the daemon's health as the systemd watchdog sees it: every data
// plane worker must answer a probe before ctx is done. (The caller's own
// loop is the other half: it pings only while it runs.)
func (d *Daemon) Check(ctx context.Context) error {
	if err := d.dp.Check(ctx); err != nil {
		return fmt.Errorf("data plane: %w", err)
	}
	return nil
}

// WedgeDataPlane hangs the data plane's workers, as a forwarder stuck in
// the kernel would (see channel.Manager.Wedge). For watchdog tests only.
func (d *Daemon) WedgeDataPlane() {
	d.log.Error("data plane wedged on request (test hook): calls are no longer relayed and the watchdog will fail")
	d.dp.Wedge()
}

// StatusLine is a one-line summary for systemd's STATUS= (and `systemctl
// status`): channels (and TURN allocations), sessions online, public
// address, the reachability verdict, traffic.
func (d *Daemon) StatusLine() string {
	st := d.Status()
	online := 0
	for _, s := range st.Sessions {
		if s.State == "online" {
			online++
		}
	}
	var b strings.Builder
	if d.Draining() {
		b.WriteString("draining: ")
	}
	fmt.Fprintf(&b, "%d/%d channels", st.Channels.Active, st.Channels.Capacity)
	if n := st.Channels.TURNAllocations; n != nil {
		fmt.Fprintf(&b, " + %d TURN", *n)
	}
	switch n := len(st.Sessions); n {
	case 0:
		b.WriteString(", no XMPP service configured")
	default:
		fmt.Fprintf(&b, ", XMPP %d/%d online", online, n)
	}
	if st.Reachability == "none" {
		b.WriteString(", no public address yet")
	} else {
		fmt.Fprintf(&b, ", public %s", st.PublicAddress)
	}
	if r := st.ReachabilityCheck; r != nil && r.CheckedAt != nil {
		// Only a finished check says anything the donor can act on.
		fmt.Fprintf(&b, ", Internet reach: %s", strings.ReplaceAll(string(r.Verdict), "_", " "))
	}
	fmt.Fprintf(&b, ", relayed %s", humanBytes(st.Traffic.BytesLocalToRemote+st.Traffic.BytesRemoteToLocal))
	return b.String()
}

// humanBytes prints n in SI units (as the donor page does).
func humanBytes(n uint64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), 0
	for v >= unit && i < 5 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %cB", v, "kMGTP"[i-1])
}
