package channel

import "time"

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

// logArgs are the "channel ended" log line's attributes: the counters
// under fixed keys (packets_<direction>, kernel_packets_<direction>,
// dropped_<reason>, dropped_kernel, relatched) that operators and tests
// grep for.
func (e End) logArgs() []any {
	args := []any{"channel", e.ID, "reason", string(e.Reason), "seconds", int(e.Duration.Seconds())}
	for _, d := range [...]Direction{LocalToRemote, RemoteToLocal} {
		args = append(args, "packets_"+d.String(), e.Stats.Packets[d])
	}
	for _, d := range [...]Direction{LocalToRemote, RemoteToLocal} {
		args = append(args, "bytes_"+d.String(), e.Stats.Bytes[d])
	}
	for _, d := range [...]Direction{LocalToRemote, RemoteToLocal} {
		args = append(args, "kernel_packets_"+d.String(), e.Stats.Offloaded[d])
	}
	for _, r := range DropReasons() {
		if r == DropNoChannel {
			continue // counted relay-wide only, never on a channel
		}
		args = append(args, "dropped_"+r.String(), e.Stats.Dropped[r])
	}
	return append(args, "dropped_kernel", e.Stats.KernelDrops, "relatched", e.Stats.Relatched)
}
