package channel

import (
	"golang.org/x/time/rate"
)

// A relay-wide bandwidth cap (limits.total_kbps) protects the donor's
// line: every relayed datagram, both directions, every channel, draws from
// one token bucket; what is over it is dropped and counted as
// rate_limited. Calls are never cut: they go on under the cap. The bucket
// lives in userspace, so while a cap is set the fast path stays off.

// totalLimiter returns the relay-wide bucket for kbps (nil = no cap).
func totalLimiter(kbps int) *rate.Limiter {
	if kbps <= 0 {
		return nil
	}
	bytesPerSec := kbps * 1000 / 8
	return rate.NewLimiter(rate.Limit(bytesPerSec), max(bytesPerSec/2, 3*MaxDatagram))
}

// setTotalKbps replaces the relay-wide cap (0 = none), live.
func (m *Manager) setTotalKbps(kbps int) {
	m.sh.total.Store(totalLimiter(kbps))
}

// fastPathUnder is the fast path mode that applies with a relay-wide cap
// of kbps: off while a cap is set (the kernel path has no bucket).
func fastPathUnder(mode FastPathMode, kbps int) FastPathMode {
	if kbps > 0 {
		return FastPathOff
	}
	return mode
}
