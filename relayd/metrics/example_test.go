package metrics_test

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"sync/atomic"

	"github.com/jnrelay/jnrelay/relayd/metrics"
)

// main.go translates the data plane's own snapshots into plain structs;
// here an atomic counter stands in for the data plane. Nothing is copied
// into Prometheus per packet: the function runs when /metrics is read.
func Example() {
	var forwarded atomic.Uint64 // the data plane's counter
	reg := metrics.NewRegistry(metrics.Sources{
		DataPlane: func() metrics.DataPlane {
			return metrics.DataPlane{
				ActiveChannels:       1,
				Capacity:             250,
				PacketsLocalToRemote: forwarded.Load(),
				Dropped:              map[string]uint64{"peer_not_latched": 2},
			}
		},
	}, "v0.1.0")
	srv := httptest.NewServer(metrics.Handler(reg))
	defer srv.Close()

	forwarded.Add(42)
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, "relayd_channels_") || strings.HasPrefix(line, "relayd_relayed_packets_total") {
			fmt.Print(line)
		}
	}
	// Output:
	// relayd_channels_active 1
	// relayd_channels_capacity 250
	// relayd_relayed_packets_total{direction="local_to_remote"} 42
	// relayd_relayed_packets_total{direction="remote_to_local"} 0
}
