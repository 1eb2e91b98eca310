// Package supervise tells systemd how relayd is doing (sd_notify): ready
// once it serves, a one-line status, watchdog pings while a health check
// passes, and stopping/reloading. Outside systemd (no NOTIFY_SOCKET) every
// call does nothing, so relayd runs the same by hand or under procd.
package supervise

import (
	"context"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends state changes to systemd.
type Notifier struct {
	log      *slog.Logger
	notify   func(state string) (bool, error)
	watchdog time.Duration // 0 = no watchdog asked for
	status   string        // last STATUS sent
	healthy  bool          // last health check passed (for logging transitions)
}

// New returns a Notifier for the environment systemd gave the process
// (NOTIFY_SOCKET, WATCHDOG_USEC/WATCHDOG_PID).
func New(log *slog.Logger) *Notifier {
	n := &Notifier{log: log, notify: func(s string) (bool, error) { return daemon.SdNotify(false, s) }, healthy: true}
	if d, err := daemon.SdWatchdogEnabled(false); err != nil {
		log.Warn("systemd watchdog settings unusable; not pinging", "err", err)
	} else {
		n.watchdog = d
	}
	return n
}

func (n *Notifier) send(state string) {
	if _, err := n.notify(state); err != nil {
		n.log.Warn("systemd notify failed", "state", state, "err", err)
	}
}

// Ready says the relay serves (data plane listening, configuration valid),
// with a first status line.
func (n *Notifier) Ready(status string) {
	n.status = status
	n.send("READY=1\nSTATUS=" + status)
}

// Status updates the status line when it changed.
func (n *Notifier) Status(status string) {
	if status == n.status {
		return
	}
	n.status = status
	n.send("STATUS=" + status)
}

// Reloading and Reloaded bracket a configuration reload (SIGHUP).
func (n *Notifier) Reloading() { n.send("RELOADING=1") }

// Reloaded ends a reload begun with Reloading.
func (n *Notifier) Reloaded() { n.send("READY=1") }

// Stopping says the relay is shutting down (draining calls).
func (n *Notifier) Stopping(status string) {
	n.status = status
	n.send("STOPPING=1\nSTATUS=" + status)
}

// CheckInterval is how often the caller should run Check: half the
// watchdog timeout systemd set, as sd_watchdog_enabled(3) advises, or 0
// when systemd asked for no watchdog.
func (n *Notifier) CheckInterval() time.Duration { return n.watchdog / 2 }

// Check runs health with a quarter of the watchdog timeout as deadline
// and pings the watchdog only if it passes. A failing check sends nothing:
// systemd then kills and restarts relayd when the timeout runs out. The
// caller runs Check from its main loop, so a stuck loop stops the pings
// as well. It returns health's error.
func (n *Notifier) Check(ctx context.Context, health func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, max(n.watchdog/4, 100*time.Millisecond))
	defer cancel()
	err := health(ctx)
	switch {
	case err == nil:
		if !n.healthy {
			n.log.Info("health check passes again; watchdog pings resume")
		}
		n.send("WATCHDOG=1")
	case n.healthy:
		n.log.Error("health check failed; watchdog pings stop, systemd will restart relayd if it does not recover", "err", err,
			"watchdog_timeout", n.watchdog.String())
	}
	n.healthy = err == nil
	return err
}
