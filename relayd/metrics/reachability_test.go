package metrics

import (
	"strings"
	"testing"
)

// The reachability families: a state set per check, the STUN one left
// out while the STUN server is off.
func TestReachabilityExposition(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Reachability
		want string
	}{
		{"both checked", Reachability{RelayPorts: "not_reachable", STUN: "reachable", CheckedAt: 1_800_000_000}, `relayd_reachability{check="relay_ports",verdict="reachable"} 0
relayd_reachability{check="relay_ports",verdict="not_reachable"} 1
relayd_reachability{check="relay_ports",verdict="cannot_tell"} 0
relayd_reachability{check="relay_ports",verdict="pending"} 0
relayd_reachability{check="stun",verdict="reachable"} 1
relayd_reachability{check="stun",verdict="not_reachable"} 0
relayd_reachability{check="stun",verdict="cannot_tell"} 0
relayd_reachability{check="stun",verdict="pending"} 0
# HELP relayd_reachability_checked_timestamp_seconds When the last reachability check finished (Unix time; 0 before the first).
# TYPE relayd_reachability_checked_timestamp_seconds gauge
relayd_reachability_checked_timestamp_seconds 1800000000
`},
		{"no STUN server, not checked yet", Reachability{RelayPorts: "pending"}, `relayd_reachability{check="relay_ports",verdict="reachable"} 0
relayd_reachability{check="relay_ports",verdict="not_reachable"} 0
relayd_reachability{check="relay_ports",verdict="cannot_tell"} 0
relayd_reachability{check="relay_ports",verdict="pending"} 1
# HELP relayd_reachability_checked_timestamp_seconds When the last reachability check finished (Unix time; 0 before the first).
# TYPE relayd_reachability_checked_timestamp_seconds gauge
relayd_reachability_checked_timestamp_seconds 0
`},
	} {
		var w textWriter
		newCollector(Sources{Reachability: func() Reachability { return tc.r }}, "dev").write(&w)
		_, got, _ := strings.Cut(string(w.buf), "# TYPE relayd_reachability gauge\n")
		if got != tc.want {
			t.Errorf("%s:\n%s\nwant:\n%s", tc.name, got, tc.want)
		}
	}
}
