package daemon

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/relayd/reachability"
)

// The daemon probes the range's edges and its STUN port against the
// configured server, and shows the verdict in the status, the status
// line and the metrics. Another relay's STUN server has no second
// address: the verdict is cannot_tell, and says so.
func TestReachabilityCheckWiring(t *testing.T) {
	other := startDaemon(t, testConfig(t))
	cfg := testConfig(t)
	cfg.Reachability.STUNServers = []string{fmt.Sprintf("127.0.0.1:%d", other.Config().STUN.Port)}
	d := startDaemon(t, cfg)

	var r *reachability.Report
	deadline := time.Now().Add(30 * time.Second)
	for r = d.Status().ReachabilityCheck; r == nil || r.CheckedAt == nil; r = d.Status().ReachabilityCheck {
		if time.Now().After(deadline) {
			t.Fatalf("no reachability report: %+v", r)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r.Verdict != reachability.CannotTell || r.RelayPorts != reachability.CannotTell || r.STUN != reachability.CannotTell ||
		!strings.Contains(r.Summary, "has no second address") || r.Server != cfg.Reachability.STUNServers[0] {
		t.Fatalf("report %+v", r)
	}
	want := map[reachability.Kind][]int{reachability.KindRelay: {cfg.Ports.Min, cfg.Ports.Max - 3}, reachability.KindSTUN: {cfg.STUN.Port}}
	got := map[reachability.Kind][]int{}
	for _, p := range r.Ports {
		got[p.Kind] = append(got[p.Kind], p.Port)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("probed %v, want the range's edges and the STUN port %v", got, want)
	}
	if line := d.StatusLine(); !strings.Contains(line, ", Internet reach: cannot tell,") {
		t.Fatalf("status line %q", line)
	}
	if m := d.MetricsSources().Reachability(); m.RelayPorts != "cannot_tell" || m.STUN != "cannot_tell" || m.CheckedAt != r.CheckedAt.Unix() {
		t.Fatalf("metrics %+v", m)
	}
	// The probe ports went back to the pool: every channel can be had.
	for range d.dp.Capacity() {
		allocate(t, d)
	}
}
