package channel

import (
	"slices"
	"testing"
	"time"
)

// TestEndLogKeys pins the "channel ended" line's keys and their order:
// operators' log queries and the end-to-end suites read them by name.
func TestEndLogKeys(t *testing.T) {
	e := End{Info: Info{ID: "x"}, Reason: EndKilled, Duration: 3 * time.Second}
	for r := range e.Stats.Dropped {
		e.Stats.Dropped[r] = uint64(100 + r)
	}
	e.Stats.KernelDrops, e.Stats.Relatched = 7, 8
	args := e.logArgs()
	var keys []string
	values := map[string]any{}
	for i := 0; i < len(args); i += 2 {
		k := args[i].(string)
		keys = append(keys, k)
		values[k] = args[i+1]
	}
	want := []string{"channel", "reason", "seconds",
		"packets_local_to_remote", "packets_remote_to_local", "bytes_local_to_remote", "bytes_remote_to_local",
		"kernel_packets_local_to_remote", "kernel_packets_remote_to_local",
		"dropped_peer_not_latched", "dropped_foreign_source", "dropped_rate_limited", "dropped_oversize", "dropped_send_error",
		"dropped_foreign_source_kernel", "dropped_forbidden_peer", "dropped_sprayer", "dropped_unconfirmed_peer",
		"dropped_packet_ceiling", "dropped_kernel", "relatched"}
	if !slices.Equal(keys, want) {
		t.Fatalf("keys\n%q\nwant\n%q", keys, want)
	}
	if values["dropped_sprayer"] != uint64(100+DropSprayer) || values["dropped_kernel"] != uint64(7) ||
		values["relatched"] != uint64(8) || values["reason"] != "killed" || values["seconds"] != 3 {
		t.Errorf("values %v", values)
	}
}
